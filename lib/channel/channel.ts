/**
 * Channels: single-producer / single-consumer rings of variable-length messages in the shared
 * memory, notified through the bitmask doorbell. While the consumer is busy its pending bit
 * stays set and the producer's rings cost nothing; a full buffer makes the producer wait for
 * space, and the consumer wakes it through the doorbell in the other direction, again only on
 * the 0->1 edge. Byte layout: docs/channel.md.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';
import {
  channelBytes,
  checkCapacity,
  maxMessage,
  PAD,
  readChannelHeader,
  recordSize,
  Word,
  writeChannelHeader,
  CHANNEL_HEADER_BYTES,
  type ChannelInfo,
} from '../protocol/channel-layout.js';
import { ClosedError, CorruptError, PeerLeftError, TimeoutError } from '../core/errors.js';
import type { Endpoint } from '../endpoint/endpoint.js';
import { Reactor, type Source, type SourceState } from '../doorbell/reactor.js';
import * as check from '../core/validate.js';
import { lowBuffer } from '../sys/shared-memory.js';

export { channelBytes, maxMessage } from '../protocol/channel-layout.js';

export interface CreateChannelOptions {
  /** Byte offset of the channel in the shared memory (64-byte aligned; after the header). */
  offset: number;
  /** Data bytes, a power of two (default 65536). Messages up to capacity/2 - 8 bytes. */
  capacity?: number;
  producer: number;
  consumer: number;
}

/**
 * Lays out an empty channel. Exactly one party creates it (before the producer sends), either
 * end or whoever sets up the memory; the ends then open it by offset.
 */
export function createChannel(peer: Endpoint, options: CreateChannelOptions): ChannelInfo {
  const capacity = checkCapacity(options.capacity ?? 65536);
  const offset = check.integer('offset', options.offset, peer.header.dataOffset);
  const info = {
    capacity,
    producer: check.integer('producer', options.producer, 0, 65535),
    consumer: check.integer('consumer', options.consumer, 0, 65535),
  };
  writeChannelHeader(lowBuffer(peer.shm), offset, info);
  return info;
}

/** Waits until a channel exists at `offset` (created by the other side), polling. */
export async function waitForChannel(peer: Endpoint, offset: number, timeout = 5000): Promise<ChannelInfo> {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return readChannelHeader(lowBuffer(peer.shm), offset);
    } catch (error) {
      if (!(error instanceof CorruptError) || Date.now() > deadline) {
        throw Date.now() > deadline ? new TimeoutError(`no channel appeared at offset ${offset} within ${timeout} ms`, { cause: error }) : error;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/**
 * One channel's record buffer (a circular SPSC buffer of length-prefixed records) as seen from
 * either end. Not called a "ring": in this package to ring is what a doorbell does.
 */
class RecordBuffer {
  readonly words: Uint32Array;
  readonly data: Uint8Array;
  readonly lengths: Uint32Array;
  readonly capacity: number;
  readonly mask: number;
  readonly max: number;

  constructor(
    readonly peer: Endpoint,
    readonly offset: number,
    readonly info: ChannelInfo,
  ) {
    const buffer = lowBuffer(peer.shm);
    this.words = new Uint32Array(buffer, offset, CHANNEL_HEADER_BYTES / 4);
    this.data = new Uint8Array(buffer, offset + CHANNEL_HEADER_BYTES, info.capacity);
    this.lengths = new Uint32Array(buffer, offset + CHANNEL_HEADER_BYTES, info.capacity / 4);
    this.capacity = info.capacity;
    this.mask = info.capacity - 1;
    this.max = maxMessage(info.capacity);
  }

  head(): number {
    return Atomics.load(this.words, Word.head);
  }
  tail(): number {
    return Atomics.load(this.words, Word.tail);
  }
  used(head: number, tail: number): number {
    return (head - tail) >>> 0;
  }
  closedByProducer(): boolean {
    return Atomics.load(this.words, Word.closed) !== 0;
  }
}

function openRecordBuffer(peer: Endpoint, offset: number, role: 'producer' | 'consumer'): RecordBuffer {
  check.integer('offset', offset, 0);
  const info = readChannelHeader(lowBuffer(peer.shm), offset);
  if (info[role] !== peer.id) {
    throw new RangeError(`the channel at ${offset} has ${role} ${info[role]}, not this peer (${peer.id})`);
  }
  return new RecordBuffer(peer, offset, info);
}

/** What send() and sendBatch() return when the message went at once (settled, shared). */
const SENT: Promise<void> = Promise.resolve();

export interface ProducerEvents {
  /** The consumer left the network; sends now fail. */
  'consumer-left': [];
}

/** The sending end of a channel. */
export class ChannelProducer extends EventEmitter<ProducerEvents> implements Disposable {
  readonly #buffer: RecordBuffer;
  readonly #reactor: Reactor;
  #head: number;
  // The consumer's tail as last read (see #write).
  #tailSeen: number;
  #closed = false;
  #consumerLeft = false;
  // Sends that could not go at once, queued in call order; the head one waits for `#need` bytes.
  #turn: Promise<void> = Promise.resolve();
  #waiters = 0;
  #need = 0;
  #resolveSpace: (() => void) | null = null;
  // Why the peer's receive loop could not serve the current wait for space (thrown by that wait).
  #waitError: Error | null = null;
  readonly #source: Source = {
    state: () => this.#state(),
    dispatch: () => {
      const resolve = this.#resolveSpace;
      this.#resolveSpace = null;
      resolve?.();
    },
    fail: (error) => {
      this.#waitError = error;
      this.#source.dispatch();
    },
  };
  readonly #onLeft = (id: number): void => {
    if (id !== this.#buffer.info.consumer) return;
    this.#consumerLeft = true;
    this.#source.dispatch();
    this.emit('consumer-left');
  };
  // Rings made before the consumer was known were skipped: make up for them (a spare ring is harmless).
  readonly #onJoined = (id: number): void => {
    if (id === this.#buffer.info.consumer && !this.#closed) this.#ringConsumer();
  };
  readonly #onPeerClosed = (): void => this.#source.dispatch();

  constructor(peer: Endpoint, offset: number) {
    super();
    this.#buffer = openRecordBuffer(peer, offset, 'producer');
    this.#reactor = Reactor.of(peer);
    this.#head = this.#buffer.head();
    this.#tailSeen = this.#buffer.tail();
    peer.on('peer-left', this.#onLeft);
    peer.on('peer-joined', this.#onJoined);
    peer.once('close', this.#onPeerClosed);
  }

  /** Largest message this channel carries. */
  get maxMessage(): number {
    return this.#buffer.max;
  }

  get consumer(): number {
    return this.#buffer.info.consumer;
  }

  /** Sends one message if it fits now; false if the buffer is full. RangeError if it can never fit. */
  trySend(message: Uint8Array): boolean {
    this.#live();
    if (!this.#write(message)) return false;
    this.#publish();
    return true;
  }

  /**
   * Sends as many of `messages` as fit now (from index `start`, default 0), with one
   * publication and at most one ring; returns how many went. Synchronous: the fastest way to
   * send many messages. A message that can never fit is a RangeError and none of the batch goes.
   */
  trySendBatch(messages: readonly Uint8Array[], start = 0): number {
    this.#live();
    const first = this.#head;
    let sent = start;
    try {
      while (sent < messages.length && this.#write(messages[sent]!)) sent++;
    } catch (error) {
      // A bad message in the batch: none of it is sent (what was written is never published).
      this.#head = first;
      throw error;
    }
    if (sent > start) this.#publish();
    return sent - start;
  }

  /**
   * Sends one message, waiting for space while the buffer is full. With room (and no earlier
   * send still waiting) the message is published before this returns, and the promise is a
   * shared, already-settled one: no promise is made per message. In a hot loop,
   * `producer.trySend(m) || (await producer.send(m))` skips even the `await`.
   */
  send(message: Uint8Array): Promise<void> {
    if (this.#waiters === 0) {
      try {
        if (this.trySend(message)) return SENT;
      } catch (error) {
        return Promise.reject(error);
      }
    }
    return this.#inTurn(async () => {
      while (!this.trySend(message)) await this.#waitForSpace(recordSize(message.byteLength) * 2);
    });
  }

  /**
   * Sends all of `messages` in order, in as few publications as space allows (one when they
   * fit). Like `send()`, a batch that goes at once returns a shared, settled promise.
   */
  sendBatch(messages: readonly Uint8Array[]): Promise<void> {
    let done = 0;
    if (this.#waiters === 0) {
      try {
        done = this.trySendBatch(messages);
      } catch (error) {
        return Promise.reject(error);
      }
      if (done === messages.length) return SENT;
    }
    return this.#inTurn(async () => {
      while (done < messages.length) {
        done += this.trySendBatch(messages, done);
        if (done < messages.length) await this.#waitForSpace(recordSize(messages[done]!.byteLength) * 2);
      }
    });
  }

  /** Runs waiting sends one after another, in call order (one waits for space at a time). */
  #inTurn(task: () => Promise<void>): Promise<void> {
    this.#waiters++;
    const run = this.#turn.then(task, task).finally(() => this.#waiters--);
    this.#turn = run.catch(() => undefined);
    return run;
  }

  /** Ends the stream: the consumer reads what was sent, then its iteration ends. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#buffer.peer.off('peer-left', this.#onLeft);
    this.#buffer.peer.off('peer-joined', this.#onJoined);
    this.#buffer.peer.off('close', this.#onPeerClosed);
    this.#reactor.remove(this.#source);
    this.#source.dispatch(); // a send waiting for space now fails with ClosedError
    if (this.#buffer.peer.closed) return;
    Atomics.store(this.#buffer.words, Word.closed, 1);
    this.#ringConsumer();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #live(): void {
    if (this.#closed || this.#buffer.peer.closed) throw new ClosedError('ChannelProducer');
    if (this.#consumerLeft) {
      throw new PeerLeftError(this.#buffer.info.consumer, `the consumer (peer ${this.#buffer.info.consumer}) left`);
    }
  }

  /** Writes one record after the last unpublished one; false if there is no room. */
  #write(message: Uint8Array): boolean {
    check.bytes('message', message);
    const buffer = this.#buffer;
    const length = message.byteLength;
    if (length > buffer.max) {
      throw new RangeError(`a message of ${length} bytes is larger than this channel carries (${buffer.max})`);
    }
    const size = recordSize(length);
    const pos = this.#head & buffer.mask;
    const contiguous = buffer.capacity - pos;
    const need = contiguous < size ? contiguous + size : size;
    // The tail only moves forward: a stale copy can only understate the room, so the shared
    // line is read again only when the copy says the record does not fit.
    if (buffer.capacity - buffer.used(this.#head, this.#tailSeen) < need) {
      this.#tailSeen = buffer.tail();
      if (buffer.capacity - buffer.used(this.#head, this.#tailSeen) < need) return false;
    }
    let at = pos;
    if (contiguous < size) {
      // The record would straddle the end: pad to it, and put the record at the start.
      buffer.lengths[pos >> 2] = PAD;
      this.#head = (this.#head + contiguous) >>> 0;
      at = 0;
    }
    buffer.data.set(message, at + 4);
    buffer.lengths[at >> 2] = length;
    this.#head = (this.#head + size) >>> 0;
    return true;
  }

  /** Commits the records written so far (one store: the consumer reads nothing beyond it, so a
   * producer dying mid-record never shows a torn message), then rings. */
  #publish(): void {
    Atomics.store(this.#buffer.words, Word.head, this.#head);
    this.#ringConsumer();
  }

  #ringConsumer(): void {
    const consumer = this.#buffer.info.consumer;
    // Not joined yet (or gone): it reads the buffer before it ever sleeps, so nothing is lost.
    if (this.#buffer.peer.vectorsOf(consumer) === 0) return;
    this.#reactor.doorbell.ring(consumer);
  }

  #hasSpace(): boolean {
    const buffer = this.#buffer;
    return buffer.capacity - buffer.used(this.#head, buffer.tail()) >= this.#need;
  }

  #state(): SourceState {
    if (this.#resolveSpace === null) return 'idle';
    if (this.#closed || this.#buffer.peer.closed || this.#consumerLeft || this.#hasSpace()) return 'actionable';
    // Still no room. The consumer clears the flag when it rings us, so arm it again before
    // this peer goes back to sleep, and look once more (the same order as #waitForSpace).
    Atomics.store(this.#buffer.words, Word.waiting, 1);
    return this.#hasSpace() ? 'actionable' : 'waiting';
  }

  async #waitForSpace(need: number): Promise<void> {
    this.#need = Math.min(need, this.#buffer.capacity);
    const words = this.#buffer.words;
    // Announce that we wait, then look again: either we see the consumer's new tail, or the
    // consumer (which stores its tail, then reads this flag) sees the flag and rings us.
    Atomics.store(words, Word.waiting, 1);
    if (this.#hasSpace()) {
      Atomics.store(words, Word.waiting, 0);
      return;
    }
    await new Promise<void>((resolve) => {
      this.#resolveSpace = resolve;
      this.#reactor.add(this.#source);
    });
    this.#reactor.remove(this.#source);
    const failed = this.#waitError;
    this.#waitError = null;
    this.#live(); // closed meanwhile (this end, or the peer and with it the memory)
    Atomics.store(words, Word.waiting, 0);
    if (failed !== null) throw failed;
  }
}

export interface ReceivedMessage {
  /** The message bytes: a view into the shared memory, valid until the next read. */
  readonly data: Uint8Array;
  /** The producer's peer ID. */
  readonly from: number;
}

/**
 * Called by {@link ChannelConsumer.drain} for each message: its bytes are
 * `data[offset … offset + length)`, where `data` is the whole data area of the producer's
 * buffer in the shared memory (the same object for every message of that buffer, so nothing is
 * allocated per message). The bytes are valid until the handler returns; copy what you keep.
 */
export type MessageHandler = (data: Uint8Array, offset: number, length: number, from: number) => void;

export interface ConsumerOptions {
  /**
   * Before waiting on an empty buffer, keep looking at the head for this many microseconds
   * (one look per event-loop turn), with the peer's pending bit kept set so that the
   * producers' rings stay suppressed; only then sleep on the doorbell. Trades a busy core for
   * the latency of a wakeup, like the doorbell's `busyPollMicros`. Default 0: sleep at once.
   */
  busyPollMicros?: number;
}

export interface ConsumerEvents {
  /** The producer of one of the rings left the network (its committed messages are still read). */
  'producer-left': [peer: number];
}

/**
 * The receiving end of one or more channels (fan-in: one buffer per producer, one doorbell bit
 * for the consumer). Messages come in per-buffer order; buffers are served round-robin, one
 * message each in turn, by every way of reading.
 *
 * Reading in batches: {@link drain} hands every committed message to a handler in one
 * synchronous call with no allocation and gives the space back to the producer once (and at
 * once while the producer waits for space); {@link readable} waits for more. `tryReceive()`,
 * `messages()` and the async iterator read through the same walk, one message at a time.
 */
export class ChannelConsumer extends EventEmitter<ConsumerEvents> implements Disposable, AsyncIterable<ReceivedMessage> {
  readonly #buffers: RecordBuffer[];
  // Per buffer: where reading has got to (everything before it was handed out), and the tail
  // as stored in the memory (space given back). Between the two lie messages still in use.
  readonly #tails: number[];
  readonly #stored: number[];
  // Per buffer: the head as last read (the walk reads the shared line only when it runs out).
  readonly #heads: number[];
  readonly #gone: boolean[];
  readonly #reactor: Reactor;
  readonly #busyPollMicros: number;
  // The length of the record #step found last.
  #length = 0;
  #next = 0;
  #closed = false;
  #polling = false;
  // Thrown by every read from now on: a corrupt buffer, or the peer's receive loop failed.
  #error: Error | null = null;
  #resolveData: (() => void) | null = null;
  readonly #source: Source = {
    state: () => this.#state(),
    dispatch: () => {
      const resolve = this.#resolveData;
      this.#resolveData = null;
      resolve?.();
    },
    // Out of the peer's receive loop, nothing would wake this consumer again: reads throw.
    fail: (error) => {
      this.#error ??= error;
      this.#source.dispatch();
    },
  };
  // A producer that waited for space before we knew it could not be rung: ring it now.
  readonly #onJoined = (id: number): void => {
    for (const buffer of this.#buffers) if (buffer.info.producer === id) this.#wakeProducer(buffer);
  };
  readonly #onPeerClosed = (): void => this.#source.dispatch();
  readonly #onLeft = (id: number): void => {
    this.#buffers.forEach((buffer, i) => {
      if (buffer.info.producer === id) this.#gone[i] = true;
    });
    if (this.#buffers.some((r) => r.info.producer === id)) {
      this.emit('producer-left', id);
      this.#reactor.poke();
      this.#source.dispatch();
    }
  };

  /** Opens the channels at `offsets` (all with this peer as consumer). */
  constructor(peer: Endpoint, offsets: number | readonly number[], options: ConsumerOptions = {}) {
    super();
    const list = typeof offsets === 'number' ? [offsets] : [...offsets];
    if (list.length === 0) throw new RangeError('at least one channel offset is needed');
    this.#busyPollMicros = check.integer('busyPollMicros', options.busyPollMicros ?? 0, 0, 10_000_000);
    this.#buffers = list.map((offset) => openRecordBuffer(peer, offset, 'consumer'));
    this.#tails = this.#buffers.map((r) => r.tail());
    this.#stored = [...this.#tails];
    this.#heads = [...this.#tails];
    this.#gone = this.#buffers.map(() => false);
    this.#reactor = Reactor.of(peer);
    peer.on('peer-left', this.#onLeft);
    peer.on('peer-joined', this.#onJoined);
    peer.once('close', this.#onPeerClosed);
    this.#reactor.add(this.#source);
  }

  /**
   * Hands every committed message (at most `max`) to `handler`, in order, and returns how many
   * it handed. Synchronous, and allocates nothing per message: the handler gets the buffer's
   * bytes with an offset and a length (see {@link MessageHandler}), valid until it returns. The
   * space is given back to the producer once, at the end (and at once while the producer
   * waits for space). With several channels, one message of each in turn.
   *
   * A handler that throws ends the drain with its error: the messages before, and the one it
   * threw on, count as read; the others stay for the next read. ClosedError once closed,
   * CorruptError if a buffer's indices or a record are impossible. 0 when nothing is committed:
   * then wait with {@link readable}.
   */
  drain(handler: MessageHandler, max = Infinity): number {
    this.#live();
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    if (!(max >= 0)) throw new RangeError(`max must be 0 or more, got ${max}`);
    this.release();
    const buffers = this.#buffers;
    const n = buffers.length;
    let count = 0;
    try {
      if (n === 1) {
        const buffer = buffers[0]!;
        const { data } = buffer;
        const from = buffer.info.producer;
        this.#heads[0] = buffer.head();
        while (count < max && !this.#closed) {
          const at = this.#step(0);
          if (at < 0) break;
          count++;
          handler(data, at, this.#length, from);
          this.#settle(0);
        }
      } else {
        for (let i = 0; i < n; i++) this.#heads[i] = buffers[i]!.head();
        // Round-robin: one message of each buffer in turn, until a whole turn finds none.
        for (let empty = 0; empty < n && count < max && !this.#closed; ) {
          const i = this.#next;
          this.#next = i + 1 === n ? 0 : i + 1;
          const at = this.#step(i);
          if (at < 0) {
            empty++;
            continue;
          }
          empty = 0;
          count++;
          const buffer = buffers[i]!;
          handler(buffer.data, at, this.#length, buffer.info.producer);
          this.#settle(i);
        }
      }
    } finally {
      if (!this.#closed && !buffers[0]!.peer.closed) this.release();
    }
    return count;
  }

  /**
   * Resolves true once a message is committed (read it with {@link drain} or `tryReceive()`),
   * false when every producer closed its end and everything was read. PeerLeftError once the
   * messages of a producer that left without closing are read; ClosedError once closed. With
   * `busyPollMicros`, looks for that long before it sleeps.
   */
  async readable(): Promise<boolean> {
    for (;;) {
      this.#live();
      if (this.#available()) return true;
      const ended = this.#ended();
      if (ended === 'closed') return false;
      if (ended !== null) throw new PeerLeftError(ended, `the producer (peer ${ended}) left`);
      this.release(); // nothing to read: everything read goes back before this end waits
      if (this.#busyPollMicros > 0 && (await this.#poll())) continue;
      if (this.#closed || this.#buffers[0]!.peer.closed) throw new ClosedError('ChannelConsumer');
      await new Promise<void>((resolve) => {
        this.#resolveData = resolve;
        this.#reactor.poke();
      });
    }
  }

  /**
   * The next message if one is committed, else null. The view is valid until the next read
   * (or `release()`). CorruptError if the buffer's indices or a record are impossible.
   */
  tryReceive(): ReceivedMessage | null {
    this.#live();
    this.release();
    return this.#take();
  }

  /** Gives the bytes of the messages read so far back to their producers (the next read does it too). */
  release(): void {
    for (let i = 0; i < this.#buffers.length; i++) if (this.#tails[i] !== this.#stored[i]) this.#commit(i);
  }

  /** Zero-copy messages; each view is valid until the next one is pulled. */
  [Symbol.asyncIterator](): AsyncIterator<ReceivedMessage> {
    return this.messages();
  }

  /**
   * Messages until every producer closed its end (or left, which throws PeerLeftError once its
   * committed messages are read). `copy: true` yields copies that stay valid. The walk is
   * drain's; the space is given back in batches as for drain (at the latest when the buffer
   * runs empty, and at once while the producer waits for space).
   */
  async *messages(options: { copy?: boolean } = {}): AsyncGenerator<ReceivedMessage, void, undefined> {
    const copy = options.copy === true;
    try {
      for (;;) {
        if (this.#closed || this.#buffers[0]!.peer.closed) return;
        this.#live();
        // The previous message is done with: its space goes back in a batch (see #settle).
        const message = this.#take();
        if (message !== null) {
          yield copy ? { data: message.data.slice(), from: message.from } : message;
          if (!this.#closed && !this.#buffers[0]!.peer.closed) this.#settleAll();
          continue;
        }
        if (this.#closed) return;
        if (!(await this.readable().catch((error: unknown) => this.#endOf(error)))) return;
      }
    } finally {
      this.#resolveData = null;
      if (!this.#closed && !this.#buffers[0]!.peer.closed) this.release();
      this.#reactor.poke();
    }
  }

  /** Stops receiving (the buffer stays in the memory). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#buffers[0]!.peer.off('peer-left', this.#onLeft);
    this.#buffers[0]!.peer.off('peer-joined', this.#onJoined);
    this.#buffers[0]!.peer.off('close', this.#onPeerClosed);
    if (!this.#buffers[0]!.peer.closed) this.release();
    this.#reactor.remove(this.#source);
    this.#source.dispatch();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #live(): void {
    if (this.#closed || this.#buffers[0]!.peer.closed) throw new ClosedError('ChannelConsumer');
    if (this.#error !== null) throw this.#error;
  }

  /** The iterator ends quietly when this end (or its peer) was closed while it waited. */
  #endOf(error: unknown): false {
    if (error instanceof ClosedError && (this.#closed || this.#buffers[0]!.peer.closed) && this.#error === null) return false;
    throw error;
  }

  /** One message, round-robin, as a view (its space not given back yet). */
  #take(): ReceivedMessage | null {
    const n = this.#buffers.length;
    for (let k = 0; k < n; k++) {
      const i = this.#next;
      this.#next = i + 1 === n ? 0 : i + 1;
      this.#heads[i] = this.#buffers[i]!.head();
      const at = this.#step(i);
      if (at >= 0) {
        const buffer = this.#buffers[i]!;
        return { data: buffer.data.subarray(at, at + this.#length), from: buffer.info.producer };
      }
    }
    return null;
  }

  /**
   * Finds buffer `i`'s next committed record: its payload's position in the data (its length in
   * #length), reading moved past it; -1 if none. Every index and length is checked against
   * what the head published before anything is read.
   */
  #step(i: number): number {
    const buffer = this.#buffers[i]!;
    for (;;) {
      const tail = this.#tails[i]!;
      let head = this.#heads[i]!;
      if (head === tail) {
        head = this.#heads[i] = buffer.head();
        if (head === tail) return -1;
      }
      const used = (head - tail) >>> 0;
      if (used > buffer.capacity || (used & 7) !== 0) return this.#corrupt(buffer, `head ${head} and tail ${tail} are ${used} bytes apart`);
      const pos = tail & buffer.mask;
      const length = buffer.lengths[pos >> 2]!;
      if (length === PAD) {
        const skip = buffer.capacity - pos;
        if (skip > used) return this.#corrupt(buffer, `a pad of ${skip} bytes at ${pos} runs past the head`);
        this.#tails[i] = (tail + skip) >>> 0;
        continue;
      }
      const size = recordSize(length);
      if (length > buffer.max || size > used || pos + size > buffer.capacity) {
        return this.#corrupt(buffer, `a record of ${length} bytes at ${pos} does not fit (${used} bytes committed)`);
      }
      this.#tails[i] = (tail + size) >>> 0;
      this.#length = length;
      return pos + 4;
    }
  }

  /** After a message of buffer `i`: give its space back now if the producer waits for space,
   * or if a quarter of the buffer is held (so that a long batch never starves the producer). */
  #settle(i: number): void {
    const buffer = this.#buffers[i]!;
    if (Atomics.load(buffer.words, Word.waiting) !== 0 || ((this.#tails[i]! - this.#stored[i]!) >>> 0) >= buffer.capacity >>> 2) this.#commit(i);
  }

  #settleAll(): void {
    for (let i = 0; i < this.#buffers.length; i++) if (this.#tails[i] !== this.#stored[i]) this.#settle(i);
  }

  /** Stores buffer `i`'s tail, then rings its producer if it waits for space. */
  #commit(i: number): void {
    const buffer = this.#buffers[i]!;
    this.#stored[i] = this.#tails[i]!;
    Atomics.store(buffer.words, Word.tail, this.#tails[i]!);
    // Tail stored (a full fence), then the flag read: see ChannelProducer#waitForSpace.
    this.#wakeProducer(buffer);
  }

  /** Rings the producer if it waits for space; the flag is taken only when the ring can be made. */
  #wakeProducer(buffer: RecordBuffer): void {
    const producer = buffer.info.producer;
    if (Atomics.load(buffer.words, Word.waiting) !== 1 || buffer.peer.vectorsOf(producer) === 0) return;
    if (Atomics.compareExchange(buffer.words, Word.waiting, 1, 0) === 1) this.#reactor.doorbell.ring(producer);
  }

  /** Looks for a message once per event-loop turn for up to busyPollMicros; the reactor keeps
   * the pending bit set meanwhile (state 'holding'), so producers' rings cost nothing. */
  async #poll(): Promise<boolean> {
    const deadline = performance.now() + this.#busyPollMicros / 1000;
    this.#polling = true;
    try {
      while (performance.now() < deadline && !this.#closed && !this.#buffers[0]!.peer.closed) {
        await nextTurn();
        if (this.#available()) return true;
      }
      return false;
    } finally {
      this.#polling = false;
    }
  }

  #available(): boolean {
    for (let i = 0; i < this.#buffers.length; i++) if (this.#buffers[i]!.head() !== this.#tails[i]) return true;
    return false;
  }

  /** 'closed' when every buffer is drained and closed by its producer; a producer ID when a
   * drained buffer's producer left without closing; null while more may come. */
  #ended(): 'closed' | number | null {
    let allClosed = true;
    for (let i = 0; i < this.#buffers.length; i++) {
      const buffer = this.#buffers[i]!;
      const drained = buffer.head() === this.#tails[i];
      if (drained && this.#gone[i] && !buffer.closedByProducer()) return buffer.info.producer;
      if (!(drained && (buffer.closedByProducer() || this.#gone[i]))) allClosed = false;
    }
    return allClosed ? 'closed' : null;
  }

  #corrupt(buffer: RecordBuffer, what: string): -1 {
    this.#error = new CorruptError(`channel at offset ${buffer.offset} is corrupt: ${what}`);
    throw this.#error;
  }

  #state(): SourceState {
    if (this.#closed || this.#buffers[0]!.peer.closed) return this.#resolveData === null ? 'idle' : 'actionable';
    const available = this.#available();
    if (this.#resolveData !== null) {
      // A reader waiting on an empty buffer depends on a ring from the other side.
      return available || this.#ended() !== null ? 'actionable' : 'waiting';
    }
    // The reader is busy with messages, has more waiting, or polls: it will look again by itself.
    let held = false;
    for (let i = 0; i < this.#buffers.length; i++) if (this.#tails[i] !== this.#stored[i]) held = true;
    return this.#polling || held || available ? 'holding' : 'idle';
  }
}

export interface DuplexOptions {
  /** Where the pair of rings starts (64-byte aligned, after the header). */
  offset: number;
  /** Data bytes per direction (power of two, default 65536). */
  capacity?: number;
  /** How long the higher-ID side waits for the rings to appear (ms, default 5000). */
  timeout?: number;
  /** The consumer's busy polling before it sleeps (see {@link ConsumerOptions.busyPollMicros}). */
  busyPollMicros?: number;
}

export interface Duplex extends Disposable {
  readonly producer: ChannelProducer;
  readonly consumer: ChannelConsumer;
  close(): void;
}

/**
 * One channel per direction between this peer and `other`, at `offset` (lower ID → higher ID)
 * and right after it (higher → lower). The lower ID lays both out; the other side waits for them.
 */
export async function openDuplex(peer: Endpoint, other: number, options: DuplexOptions): Promise<Duplex> {
  check.integer('other', other, 0, 65535);
  if (other === peer.id) throw new RangeError('a duplex channel needs another peer');
  const capacity = checkCapacity(options.capacity ?? 65536);
  const offset = options.offset;
  const second = offset + channelBytes(capacity);
  const [low, high] = peer.id < other ? [peer.id, other] : [other, peer.id];
  if (peer.id === low) {
    createChannel(peer, { offset, capacity, producer: low, consumer: high });
    createChannel(peer, { offset: second, capacity, producer: high, consumer: low });
  } else {
    await waitForChannel(peer, offset, options.timeout);
    await waitForChannel(peer, second, options.timeout);
  }
  const [out, inbound] = peer.id === low ? [offset, second] : [second, offset];
  const producer = new ChannelProducer(peer, out);
  const consumer = new ChannelConsumer(peer, inbound, { busyPollMicros: options.busyPollMicros ?? 0 });
  const close = (): void => {
    producer.close();
    consumer.close();
  };
  return { producer, consumer, close, [Symbol.dispose]: close };
}

export interface FanInLayout {
  /** Offset of the first buffer; the others follow, one per producer. */
  offset: number;
  capacity?: number;
  producers: readonly number[];
  consumer: number;
}

/** Lays out one buffer per producer for a fan-in; returns each producer's buffer offset. */
export function createFanIn(peer: Endpoint, layout: FanInLayout): number[] {
  const capacity = checkCapacity(layout.capacity ?? 65536);
  return layout.producers.map((producer, i) => {
    const offset = layout.offset + i * channelBytes(capacity);
    createChannel(peer, { offset, capacity, producer, consumer: layout.consumer });
    return offset;
  });
}
