/**
 * The receiving end of one or more channels. Its doorbell bit stays set while it has messages
 * or polls, so the producers' rings cost nothing then; it sleeps only on empty buffers. Space
 * goes back to the producers in batches (one tail store per batch or per quarter of a buffer).
 */
import { EventEmitter } from 'node:events';
import { ClosedError, PeerLeftError } from '../core/errors.js';
import type { Endpoint } from '../endpoint/endpoint.js';
import { Reactor, type Source, type SourceState } from '../doorbell/reactor.js';
import { busyPoll } from '../doorbell/busy-poll.js';
import * as check from '../core/validate.js';
import { openRecordBuffer, Reader } from './record-buffer.js';

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
   * (in 20 µs synchronous slices with an event-loop turn between them), with the peer's pending bit kept set so that the
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
 * synchronous call with no allocation and gives the space back to the producer once per batch
 * (and every quarter of the buffer within a long one); {@link readable} waits for more.
 * `tryReceive()`, `messages()` and the async iterator read through the same walk, one message
 * at a time.
 */
export class ChannelConsumer extends EventEmitter<ConsumerEvents> implements Disposable, AsyncIterable<ReceivedMessage> {
  readonly #readers: Reader[];
  readonly #endpoint: Endpoint;
  readonly #reactor: Reactor;
  readonly #busyPollMicros: number;
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
    for (const reader of this.#readers) if (reader.buffer.producer === id && reader.takeWaiting()) this.#ring(id);
  };
  readonly #onPeerClosed = (): void => this.#source.dispatch();
  // What a busy poll for messages looks at, and when it gives up.
  readonly #availableNow = (): boolean => this.#available();
  readonly #stopped = (): boolean => this.#closed || this.#endpoint.closed;
  readonly #onLeft = (id: number): void => {
    let ours = false;
    for (const reader of this.#readers) {
      if (reader.buffer.producer !== id) continue;
      reader.gone = true;
      ours = true;
    }
    if (ours) {
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
    const onCorrupt = (error: Error): void => {
      this.#error ??= error;
    };
    this.#readers = list.map((offset) => new Reader(openRecordBuffer(peer, offset, 'consumer'), onCorrupt));
    this.#endpoint = peer;
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
   * space goes back to the producer once, at the end, and every quarter of the buffer within a
   * long batch (so a producer waiting for space gets it while the batch is being read).
   * With several channels, one message of each in turn.
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
    const readers = this.#readers;
    let count = 0;
    try {
      if (readers.length === 1) {
        const reader = readers[0]!;
        const { data, producer } = reader.buffer;
        while (count < max) {
          const at = reader.next();
          if (at < 0) break;
          count++;
          handler(data, at, reader.length, producer);
          if (this.#closed) break;
          this.#settle(reader);
        }
      } else {
        // Round-robin: one message of each buffer in turn, until a whole turn finds none.
        const n = readers.length;
        for (let empty = 0; empty < n && count < max && !this.#closed; ) {
          const i = this.#next;
          this.#next = i + 1 === n ? 0 : i + 1;
          const reader = readers[i]!;
          const at = reader.next();
          if (at < 0) {
            empty++;
            continue;
          }
          empty = 0;
          count++;
          handler(reader.buffer.data, at, reader.length, reader.buffer.producer);
          if (!this.#closed) this.#settle(reader);
        }
      }
    } finally {
      if (!this.#closed && !this.#endpoint.closed) this.release();
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
      if (this.#closed || this.#endpoint.closed) throw new ClosedError('ChannelConsumer');
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
    for (const reader of this.#readers) if (reader.tail !== reader.stored) this.#commit(reader);
  }

  /** Zero-copy messages; each view is valid until the next one is pulled. */
  [Symbol.asyncIterator](): AsyncIterator<ReceivedMessage> {
    return this.messages();
  }

  /**
   * Messages until every producer closed its end (or left, which throws PeerLeftError once its
   * committed messages are read). `copy: true` yields copies that stay valid. The walk is
   * drain's; the space is given back in batches as for drain (at the latest when the buffer
   * runs empty, and every quarter of the buffer).
   */
  async *messages(options: { copy?: boolean } = {}): AsyncGenerator<ReceivedMessage, void, undefined> {
    const copy = options.copy === true;
    try {
      for (;;) {
        if (this.#closed || this.#endpoint.closed) return;
        this.#live();
        // The previous message is done with: its space goes back in a batch (see #settle).
        const message = this.#take();
        if (message !== null) {
          yield copy ? { data: message.data.slice(), from: message.from } : message;
          if (!this.#closed && !this.#endpoint.closed) for (const reader of this.#readers) this.#settle(reader);
          continue;
        }
        if (this.#closed) return;
        if (!(await this.readable().catch((error: unknown) => this.#endOf(error)))) return;
      }
    } finally {
      this.#resolveData = null;
      if (!this.#closed && !this.#endpoint.closed) this.release();
      this.#reactor.poke();
    }
  }

  /** Stops receiving (the buffer stays in the memory). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#endpoint.off('peer-left', this.#onLeft);
    this.#endpoint.off('peer-joined', this.#onJoined);
    this.#endpoint.off('close', this.#onPeerClosed);
    if (!this.#endpoint.closed) this.release();
    this.#reactor.remove(this.#source);
    this.#source.dispatch();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #live(): void {
    if (this.#closed || this.#endpoint.closed) throw new ClosedError('ChannelConsumer');
    if (this.#error !== null) throw this.#error;
  }

  /** The iterator ends quietly when this end (or its peer) was closed while it waited. */
  #endOf(error: unknown): false {
    if (error instanceof ClosedError && (this.#closed || this.#endpoint.closed) && this.#error === null) return false;
    throw error;
  }

  /** One message, round-robin, as a view (its space not given back yet). */
  #take(): ReceivedMessage | null {
    const n = this.#readers.length;
    for (let k = 0; k < n; k++) {
      const i = this.#next;
      this.#next = i + 1 === n ? 0 : i + 1;
      const reader = this.#readers[i]!;
      const at = reader.next();
      if (at >= 0) return { data: reader.buffer.data.subarray(at, at + reader.length), from: reader.buffer.producer };
    }
    return null;
  }

  /** After a message: give the space back once a quarter of the buffer is held, so that a long
   * batch never starves the producer. Not at every message: a producer waiting for space would
   * then be rung for every record, where a quarter at a time costs one ring per quarter. */
  #settle(reader: Reader): void {
    if (reader.held() >= reader.buffer.capacity >>> 2) this.#commit(reader);
  }

  /** Stores the reader's tail, then rings its producer if it waits for space. */
  #commit(reader: Reader): void {
    if (reader.commit()) this.#ring(reader.buffer.producer);
  }

  #ring(producer: number): void {
    this.#reactor.doorbell.ring(producer);
  }

  /** Looks for a message for up to busyPollMicros; the reactor keeps
   * the pending bit set meanwhile (state 'holding'), so producers' rings cost nothing. */
  async #poll(): Promise<boolean> {
    this.#polling = true;
    try {
      return await busyPoll(this.#busyPollMicros, this.#availableNow, this.#stopped);
    } finally {
      this.#polling = false;
    }
  }


  #available(): boolean {
    for (const reader of this.#readers) if (reader.head !== reader.tail || reader.available()) return true;
    return false;
  }

  /** 'closed' when every buffer is drained and closed by its producer; a producer ID when a
   * drained buffer's producer left without closing; null while more may come. */
  #ended(): 'closed' | number | null {
    let allClosed = true;
    for (const reader of this.#readers) {
      const drained = !reader.available();
      const closed = reader.buffer.closedByProducer();
      if (drained && reader.gone && !closed) return reader.buffer.producer;
      if (!(drained && (closed || reader.gone))) allClosed = false;
    }
    return allClosed ? 'closed' : null;
  }

  #state(): SourceState {
    if (this.#closed || this.#endpoint.closed) return this.#resolveData === null ? 'idle' : 'actionable';
    const available = this.#available();
    if (this.#resolveData !== null) {
      // A reader waiting on an empty buffer depends on a ring from the other side.
      return available || this.#ended() !== null ? 'actionable' : 'waiting';
    }
    // The reader is busy with messages, has more waiting, or polls: it will look again by itself.
    let held = false;
    for (const reader of this.#readers) if (reader.tail !== reader.stored) held = true;
    return this.#polling || held || available ? 'holding' : 'idle';
  }
}
