/**
 * The sending end of a channel. Records are written after the last published one and
 * published with one store of the head; the consumer is rung after each publication, which
 * costs nothing while its pending bit is still set (it is busy). A full buffer makes the
 * producer wait for space: it arms the `waiting` flag and the consumer rings it back.
 */
import { EventEmitter } from 'node:events';
import { recordSize, Word } from '../protocol/channel-layout.js';
import { ClosedError, PeerLeftError } from '../core/errors.js';
import type { Endpoint } from '../endpoint/endpoint.js';
import { Reactor, type Source, type SourceState } from '../doorbell/reactor.js';
import { busyPoll } from '../doorbell/busy-poll.js';
import * as check from '../core/validate.js';
import { openRecordBuffer, putRecord, type RecordBuffer } from './record-buffer.js';

/** What send() and sendBatch() return when the message went at once (settled, shared). */
const SENT: Promise<void> = Promise.resolve();

export interface ProducerEvents {
  /** The consumer left the network; sends now fail. */
  'consumer-left': [];
}

export interface ProducerOptions {
  /**
   * When the buffer is full, keep looking at the consumer's tail for this many microseconds
   * (in 20 µs synchronous slices with an event-loop turn between them) before arming the `waiting` flag and sleeping until the
   * consumer rings: no doorbell in either direction while the consumer keeps up within that
   * time. Trades a busy core for the wakeups, like the consumer's `busyPollMicros`. Default 0.
   */
  busyPollMicros?: number;
}

export class ChannelProducer extends EventEmitter<ProducerEvents> implements Disposable {
  readonly #buffer: RecordBuffer;
  readonly #reactor: Reactor;
  readonly #busyPollMicros: number;
  #head: number;
  // The consumer's tail as last read. The tail only moves forward, so a stale copy can only
  // understate the room: the shared line is read again only when a record does not fit.
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
    if (id !== this.#buffer.consumer) return;
    this.#consumerLeft = true;
    this.#source.dispatch();
    this.emit('consumer-left');
  };
  // Rings made before the consumer was known were skipped: make up for them (a spare ring is harmless).
  readonly #onJoined = (id: number): void => {
    if (id === this.#buffer.consumer && !this.#closed) this.#ringConsumer();
  };
  readonly #onPeerClosed = (): void => this.#source.dispatch();
  // What a busy poll for space looks at, and when it gives up.
  readonly #hasSpaceNow = (): boolean => this.#hasSpace();
  readonly #stopped = (): boolean => this.#closed || this.#buffer.peer.closed || this.#consumerLeft;

  constructor(peer: Endpoint, offset: number, options: ProducerOptions = {}) {
    super();
    this.#busyPollMicros = check.integer('busyPollMicros', options.busyPollMicros ?? 0, 0, 10_000_000);
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
    return this.#buffer.consumer;
  }

  /** Sends one message if it fits now; false if the buffer is full. RangeError if it can never fit. */
  trySend(message: Uint8Array): boolean {
    this.#live();
    const head = this.#put(this.#head, message);
    if (head < 0) return false;
    this.#publish(head);
    return true;
  }

  /**
   * Sends as many of `messages` as fit now (from index `start`, default 0), with one
   * publication and at most one ring; returns how many went. Synchronous: the fastest way to
   * send many messages. A message that can never fit is a RangeError and none of the batch goes.
   */
  trySendBatch(messages: readonly Uint8Array[], start = 0): number {
    this.#live();
    let head = this.#head;
    let i = start;
    // A throw leaves #head as it was: what was written is never published.
    for (; i < messages.length; i++) {
      const next = this.#put(head, messages[i]!);
      if (next < 0) break;
      head = next;
    }
    if (i > start) this.#publish(head);
    return i - start;
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
      throw new PeerLeftError(this.#buffer.consumer, `the consumer (peer ${this.#buffer.consumer}) left`);
    }
  }

  /** Writes `message` at `head` (see putRecord); the consumer's tail is read again only when
   * the copy says the record does not fit. The new head, or -1 if there is no room. */
  #put(head: number, message: Uint8Array): number {
    const next = putRecord(this.#buffer, head, this.#tailSeen, message);
    if (next >= 0) return next;
    this.#tailSeen = this.#buffer.tail();
    return putRecord(this.#buffer, head, this.#tailSeen, message);
  }

  /** Commits the records written up to `head` (one store: the consumer reads nothing beyond
   * it, so a producer dying mid-record never shows a torn message), then rings. */
  #publish(head: number): void {
    this.#head = head;
    Atomics.store(this.#buffer.words, Word.head, head);
    this.#ringConsumer();
  }

  #ringConsumer(): void {
    const consumer = this.#buffer.consumer;
    // Not joined yet (or gone): it reads the buffer before it ever sleeps, so nothing is lost.
    if (this.#buffer.peer.vectorsOf(consumer) === 0) return;
    this.#reactor.doorbell.ring(consumer);
  }

  #hasSpace(): boolean {
    const buffer = this.#buffer;
    return buffer.capacity - ((this.#head - buffer.tail()) >>> 0) >= this.#need;
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
    if (this.#busyPollMicros > 0 && (await busyPoll(this.#busyPollMicros, this.#hasSpaceNow, this.#stopped))) return;
    this.#live(); // closed while it polled
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
