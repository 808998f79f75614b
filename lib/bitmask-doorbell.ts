/**
 * The level-triggered bitmask doorbell (the 2010 review's proposal), as an API. One pending
 * bit per peer in the shared header: a sender that finds the receiver's bit set does nothing;
 * only the 0->1 edge writes the receiver's eventfd; the receiver drains, works, clears its bit
 * and re-checks. The receive side here enforces that rule, so no wakeup is ever lost.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { ClosedError } from './errors.js';
import { NO_BITMASK, UNKNOWN_PEER, type DoorbellCounters, type NativeDoorbell } from './binding.js';
import type { Peer } from './peer.js';
import * as check from './validate.js';

export interface ReceiveOptions {
  /**
   * After running out of work, keep the pending bit set and poll `hasWork()` from the event
   * loop for this many microseconds before clearing the bit and sleeping. Senders stay
   * suppressed meanwhile, and the receiver skips the wakeup (an idle vCPU's cross-core wake
   * costs ~21 µs one way). Costs a busy core while polling. Default 0: block at once.
   */
  busyPollMicros?: number;
  /** Stops the loop. */
  signal?: AbortSignal;
}

export class BitmaskDoorbell implements Disposable {
  readonly #peer: Peer;
  readonly #native: NativeDoorbell;
  readonly #ring: (dest: number) => number;
  #notified = false;
  #wake: (() => void) | null = null;
  #closed = false;
  readonly #onInterrupt = (vector: number): void => {
    if (vector !== 0) return;
    this.#notified = true;
    this.#wake?.();
  };
  readonly #onClose = (): void => this.close();

  /** Over a peer connected with `bitmask: true`; rings and wakeups use vector 0. */
  constructor(peer: Peer) {
    this.#peer = peer;
    peer.header; // throws unless the peer has the bitmask header
    this.#native = peer.nativeDoorbell;
    this.#ring = this.#native.ring;
    peer.on('interrupt', this.#onInterrupt);
    peer.once('close', this.#onClose);
  }

  get id(): number {
    return this.#peer.id;
  }

  /**
   * Publish your work in shared memory first, then ring. Returns true if this ring made the
   * receiver's 0->1 edge (and wrote its eventfd), false if it was suppressed (bit already set).
   */
  ring(dest: number): boolean {
    const result = this.#ring(dest);
    if (result >= 0) return result === 1;
    throw this.#ringError(result, dest);
  }

  /** Rings every other live peer; returns how many were signalled (the others were busy). */
  broadcast(): number {
    return this.#native.broadcast();
  }

  /** Whether this peer's own pending bit is set. */
  pending(): boolean {
    return this.#native.pending() === 1;
  }

  /**
   * Yields whenever `hasWork()` is true; process the work before pulling the next value.
   * Between yields it clears the pending bit and re-checks `hasWork()` (the rule that makes
   * the design lose no wakeup), and sleeps on the eventfd only when there is truly nothing.
   */
  async *notifications(hasWork: () => boolean, options: ReceiveOptions = {}): AsyncGenerator<void, void, undefined> {
    if (typeof hasWork !== 'function') throw new TypeError('hasWork must be a function');
    const busyPoll = check.integer('busyPollMicros', options.busyPollMicros ?? 0, 0, 10_000_000);
    const signal = options.signal;
    const stopped = (): boolean => this.#closed || signal?.aborted === true;
    const onAbort = (): void => this.#wake?.();
    signal?.addEventListener('abort', onAbort);
    try {
      // No waiting first: the bit may already be set by a ring that came before we listened.
      for (;;) {
        while (!stopped() && hasWork()) yield;
        if (stopped()) return;
        if (busyPoll > 0 && (await this.#poll(hasWork, busyPoll, stopped))) continue;
        this.#native.ack();
        if (hasWork()) {
          // A sender saw the bit still set before the clear and did not signal: keep going,
          // and set the bit again so that senders stay quiet while we do.
          this.#native.claim();
          continue;
        }
        await this.#nextInterrupt();
        if (stopped()) return;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Runs `handle()` while `hasWork()` is true, forever (until aborted or closed), following
   * the protocol. `handle` may be async; it is awaited before the next check.
   */
  async serve(hasWork: () => boolean, handle: () => void | Promise<void>, options: ReceiveOptions = {}): Promise<void> {
    for await (const _ of this.notifications(hasWork, options)) await handle();
  }

  /** Native counters of this peer (rings, suppressed, signals, eventfd writes/reads, wakeups, acks…). */
  counters(): DoorbellCounters {
    return this.#native.counters();
  }

  resetCounters(): void {
    this.#native.resetCounters();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops listening (receive loops end). The peer stays open. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#peer.off('interrupt', this.#onInterrupt);
    this.#peer.off('close', this.#onClose);
    this.#wake?.();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  async #poll(hasWork: () => boolean, micros: number, stopped: () => boolean): Promise<boolean> {
    const deadline = performance.now() + micros / 1000;
    while (performance.now() < deadline && !stopped()) {
      await nextTurn();
      if (hasWork()) return true;
    }
    return false;
  }

  #nextInterrupt(): Promise<void> {
    if (this.#notified || this.#closed) {
      this.#notified = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      this.#wake = () => {
        this.#wake = null;
        this.#notified = false;
        resolve();
      };
    });
  }

  #ringError(result: number, dest: number): Error {
    if (this.#closed) return new ClosedError('BitmaskDoorbell');
    if (result === UNKNOWN_PEER) return new RangeError(`peer ${dest} is not known to peer ${this.#peer.id}`);
    if (result === NO_BITMASK) return new RangeError('the peer has no bitmask header');
    return new Error(`ring returned ${result}`);
  }
}
