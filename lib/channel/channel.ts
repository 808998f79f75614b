/**
 * Channels: single-producer / single-consumer rings of variable-length messages in the shared
 * memory, notified through the bitmask doorbell. While the consumer is busy its pending bit
 * stays set and the producer's rings cost nothing; a full buffer makes the producer wait for
 * space, and the consumer wakes it through the doorbell in the other direction, again only on
 * the 0->1 edge. Byte layout: docs/channel.md.
 */
import { EventEmitter } from 'node:events';
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

export interface ProducerEvents {
  /** The consumer left the network; sends now fail. */
  'consumer-left': [];
}

/** The sending end of a channel. */
export class ChannelProducer extends EventEmitter<ProducerEvents> implements Disposable {
  readonly #buffer: RecordBuffer;
  readonly #reactor: Reactor;
  #head: number;
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

  /** Sends as many of `messages` as fit now, with one publication and one buffer; returns how many. */
  trySendBatch(messages: readonly Uint8Array[]): number {
    this.#live();
    const start = this.#head;
    let sent = 0;
    try {
      while (sent < messages.length && this.#write(messages[sent]!)) sent++;
    } catch (error) {
      // A bad message in the batch: none of it is sent (what was written is never published).
      this.#head = start;
      throw error;
    }
    if (sent > 0) this.#publish();
    return sent;
  }

  /** Sends one message, waiting for space while the buffer is full. */
  async send(message: Uint8Array): Promise<void> {
    // With room and nobody queued ahead, no promise round: the common case stays cheap.
    if (this.#waiters === 0 && this.trySend(message)) return;
    await this.#inTurn(async () => {
      while (!this.trySend(message)) await this.#waitForSpace(recordSize(message.byteLength) * 2);
    });
  }

  /** Sends all of `messages` in order, in as few publications as space allows. */
  async sendBatch(messages: readonly Uint8Array[]): Promise<void> {
    await this.#inTurn(async () => {
      let done = 0;
      while (done < messages.length) {
        const n = this.trySendBatch(done === 0 ? messages : messages.slice(done));
        done += n;
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
    if (buffer.capacity - buffer.used(this.#head, buffer.tail()) < need) return false;
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

export interface ConsumerEvents {
  /** The producer of one of the rings left the network (its committed messages are still read). */
  'producer-left': [peer: number];
}

/**
 * The receiving end of one or more channels (fan-in: one buffer per producer, one doorbell bit
 * for the consumer). Messages come in per-buffer order; buffers are served round-robin.
 */
export class ChannelConsumer extends EventEmitter<ConsumerEvents> implements Disposable, AsyncIterable<ReceivedMessage> {
  readonly #buffers: RecordBuffer[];
  readonly #tails: number[];
  readonly #gone: boolean[];
  readonly #reactor: Reactor;
  // The record handed out last (zero-copy): its bytes are released on the next read.
  #outstanding = -1;
  #outstandingEnd = 0;
  #next = 0;
  #closed = false;
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
  constructor(peer: Endpoint, offsets: number | readonly number[]) {
    super();
    const list = typeof offsets === 'number' ? [offsets] : [...offsets];
    if (list.length === 0) throw new RangeError('at least one channel offset is needed');
    this.#buffers = list.map((offset) => openRecordBuffer(peer, offset, 'consumer'));
    this.#tails = this.#buffers.map((r) => r.tail());
    this.#gone = this.#buffers.map(() => false);
    this.#reactor = Reactor.of(peer);
    peer.on('peer-left', this.#onLeft);
    peer.on('peer-joined', this.#onJoined);
    peer.once('close', this.#onPeerClosed);
    this.#reactor.add(this.#source);
  }

  /**
   * The next message if one is committed, else null. The view is valid until the next read
   * (or `release()`). CorruptError if the buffer's indices or a record are impossible.
   */
  tryReceive(): ReceivedMessage | null {
    if (this.#closed || this.#buffers[0]!.peer.closed) throw new ClosedError('ChannelConsumer');
    if (this.#error !== null) throw this.#error;
    this.release();
    const n = this.#buffers.length;
    for (let k = 0; k < n; k++) {
      const i = (this.#next + k) % n;
      const data = this.#take(i);
      if (data !== null) {
        this.#next = (i + 1) % n;
        return { data, from: this.#buffers[i]!.info.producer };
      }
    }
    return null;
  }

  /** Gives the last message's bytes back to its producer (done implicitly by the next read). */
  release(): void {
    const i = this.#outstanding;
    if (i < 0) return;
    this.#outstanding = -1;
    const buffer = this.#buffers[i]!;
    this.#tails[i] = this.#outstandingEnd;
    Atomics.store(buffer.words, Word.tail, this.#outstandingEnd);
    // Tail stored (a full fence), then the flag read: see ChannelProducer#waitForSpace.
    this.#wakeProducer(buffer);
  }

  /** Rings the producer if it waits for space; the flag is taken only when the ring can be made. */
  #wakeProducer(buffer: RecordBuffer): void {
    const producer = buffer.info.producer;
    if (Atomics.load(buffer.words, Word.waiting) !== 1 || buffer.peer.vectorsOf(producer) === 0) return;
    if (Atomics.compareExchange(buffer.words, Word.waiting, 1, 0) === 1) this.#reactor.doorbell.ring(producer);
  }

  /** Zero-copy messages; each view is valid until the next one is pulled. */
  [Symbol.asyncIterator](): AsyncIterator<ReceivedMessage> {
    return this.messages();
  }

  /**
   * Messages until every producer closed its end (or left, which throws PeerLeftError once its
   * committed messages are read). `copy: true` yields copies that stay valid.
   */
  async *messages(options: { copy?: boolean } = {}): AsyncGenerator<ReceivedMessage, void, undefined> {
    try {
      for (;;) {
        if (this.#closed || this.#buffers[0]!.peer.closed) return;
        const message = this.tryReceive();
        if (message !== null) {
          yield options.copy === true ? { data: message.data.slice(), from: message.from } : message;
          continue;
        }
        const ended = this.#ended();
        if (ended === 'closed') return;
        if (ended !== null) throw new PeerLeftError(ended, `the producer (peer ${ended}) left`);
        if (this.#closed) return;
        await new Promise<void>((resolve) => {
          this.#resolveData = resolve;
          this.#reactor.poke();
        });
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

  #take(i: number): Uint8Array | null {
    const buffer = this.#buffers[i]!;
    for (;;) {
      const tail = this.#tails[i]!;
      const head = buffer.head();
      const used = buffer.used(head, tail);
      if (used === 0) return null;
      if (used > buffer.capacity || used % 8 !== 0) return this.#corrupt(buffer, `head ${head} and tail ${tail} are ${used} bytes apart`);
      const pos = tail & buffer.mask;
      const length = buffer.lengths[pos >> 2]!;
      if (length === PAD) {
        const skip = buffer.capacity - pos;
        if (skip > used) return this.#corrupt(buffer, `a pad of ${skip} bytes at ${pos} runs past the head`);
        this.#tails[i] = (tail + skip) >>> 0;
        Atomics.store(buffer.words, Word.tail, this.#tails[i]!);
        continue;
      }
      const size = recordSize(length);
      if (length > buffer.max || size > used || pos + size > buffer.capacity) {
        return this.#corrupt(buffer, `a record of ${length} bytes at ${pos} does not fit (${used} bytes committed)`);
      }
      this.#outstanding = i;
      this.#outstandingEnd = (tail + size) >>> 0;
      return buffer.data.subarray(pos + 4, pos + 4 + length);
    }
  }

  #corrupt(buffer: RecordBuffer, what: string): null {
    this.#error = new CorruptError(`channel at offset ${buffer.offset} is corrupt: ${what}`);
    throw this.#error;
  }

  #state(): SourceState {
    if (this.#closed || this.#buffers[0]!.peer.closed) return this.#resolveData === null ? 'idle' : 'actionable';
    const available = this.#buffers.some((buffer, i) => buffer.head() !== this.#tails[i]);
    if (this.#resolveData !== null) {
      // A reader waiting on an empty buffer depends on a ring from the other side.
      return available || this.#ended() !== null ? 'actionable' : 'waiting';
    }
    // The reader is busy with a message, or has more waiting: it will look again by itself.
    return this.#outstanding >= 0 || available ? 'holding' : 'idle';
  }
}

export interface DuplexOptions {
  /** Where the pair of rings starts (64-byte aligned, after the header). */
  offset: number;
  /** Data bytes per direction (power of two, default 65536). */
  capacity?: number;
  /** How long the higher-ID side waits for the rings to appear (ms, default 5000). */
  timeout?: number;
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
  const consumer = new ChannelConsumer(peer, inbound);
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
