/**
 * The level-triggered bitmask doorbell (the 2010 review's proposal), as an API. One pending
 * bit per peer in the shared header: a sender that finds the receiver's bit set does nothing;
 * only the 0->1 edge writes the receiver's eventfd; the receiver drains, works, clears its bit
 * and re-checks. The receive side here enforces that rule, so no wakeup is ever lost.
 */
import { ClosedError, InUseError } from '../core/errors.js';
import type { Endpoint, PendingBits } from '../endpoint/endpoint.js';
import type { InterruptCounters } from '../sys/interrupt-table.js';
import * as check from '../core/validate.js';
import { busyPoll } from './busy-poll.js';

/**
 * Peers whose pending bit a receive loop serves. One loop per peer: the bit stands for all of a
 * peer's work, and a second loop re-checking only its own could claim the bit and leave the
 * other asleep with work pending (channels share the peer's one loop through its reactor).
 */
const receiving = new WeakSet<Endpoint>();

/** @internal Whether a receive loop serves `peer`'s pending bit now (the reactor checks before it starts one). */
export function hasReceiveLoop(peer: Endpoint): boolean {
  return receiving.has(peer);
}

/** How often a sleeping receiver looks at its own bit (see #nextInterrupt). */
const STALE_BIT_CHECK_MS = 1000;

export interface ReceiveOptions {
  /**
   * After running out of work, keep the pending bit set and poll `hasWork()` for this many
   * microseconds (20 µs synchronous slices with an event-loop turn between them, see
   * busy-poll.ts) before clearing the bit and sleeping. Senders stay
   * suppressed meanwhile, and the receiver skips the wakeup (an idle vCPU's cross-core wake
   * costs ~21 µs one way). Costs a busy core while polling. Default 0: block at once.
   */
  busyPollMicros?: number;
  /** Stops the loop. */
  signal?: AbortSignal;
}

export class BitmaskDoorbell implements Disposable {
  readonly #peer: Endpoint;
  // The header's bits as the endpoint rings them (the ring itself, suppressed or not, is there).
  readonly #bits: PendingBits;
  #notified = false;
  #wake: (() => void) | null = null;
  #closed = false;
  readonly #onInterrupt = (vector: number): void => {
    if (vector !== 0) return;
    this.#notified = true;
    this.#wake?.();
  };
  readonly #onClose = (): void => this.close();

  readonly #onClear: (() => void) | undefined;

  /**
   * Over a peer (an Endpoint: a Peer connected with `bitmask: true`); rings and wakeups use
   * vector 0. `onClear` is told of every clear of the own bit (the device model counts it as a
   * register write).
   */
  constructor(peer: Endpoint, options: { onClear?: () => void } = {}) {
    this.#peer = peer;
    this.#onClear = options.onClear;
    this.#bits = peer.pendingBits; // throws unless the peer has the bitmask header
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
    if (this.#closed) throw new ClosedError('BitmaskDoorbell');
    return this.#bits.ring(dest);
  }

  /** Rings every other live peer; returns how many were signalled (the others were busy). */
  broadcast(): number {
    this.#live();
    return this.#bits.broadcast();
  }

  /** Whether this peer's own pending bit is set. */
  pending(): boolean {
    this.#live();
    return this.#bits.pending();
  }

  /**
   * Yields whenever `hasWork()` is true; process the work before pulling the next value.
   * Between yields it clears the pending bit and re-checks `hasWork()` (the rule that makes
   * the design lose no wakeup), and sleeps on the eventfd only when there is truly nothing.
   */
  async *notifications(hasWork: () => boolean, options: ReceiveOptions = {}): AsyncGenerator<void, void, undefined> {
    if (typeof hasWork !== 'function') throw new TypeError('hasWork must be a function');
    const pollMicros = check.integer('busyPollMicros', options.busyPollMicros ?? 0, 0, 10_000_000);
    const signal = options.signal;
    if (receiving.has(this.#peer)) {
      throw new InUseError(
        `peer ${this.#peer.id} already has a receive loop on its pending bit (one per peer: put all its work in one hasWork(), or use channels, which share one)`,
      );
    }
    receiving.add(this.#peer);
    const stopped = (): boolean => this.#closed || this.#peer.closed || signal?.aborted === true;
    const onAbort = (): void => this.#wake?.();
    signal?.addEventListener('abort', onAbort);
    try {
      // No waiting first: the bit may already be set by a ring that came before we listened.
      for (;;) {
        while (!stopped() && hasWork()) yield;
        if (stopped()) return;
        if (pollMicros > 0 && (await busyPoll(pollMicros, hasWork, stopped))) continue;
        this.#bits.ack();
        this.#onClear?.();
        if (hasWork()) {
          // A sender saw the bit still set before the clear and did not signal: keep going,
          // and set the bit again so that senders stay quiet while we do.
          this.#bits.claim();
          continue;
        }
        await this.#nextInterrupt();
        if (stopped()) return;
      }
    } finally {
      receiving.delete(this.#peer);
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

  /** Counters of this peer (rings, suppressed, signals, eventfd writes/reads, wakeups, acks…). */
  counters(): InterruptCounters {
    return this.#peer.counters();
  }

  resetCounters(): void {
    this.#peer.resetCounters();
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

  #nextInterrupt(): Promise<void> {
    if (this.#notified || this.#closed) {
      this.#notified = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      // Asleep, the own bit is 0 unless a ring is on its way. One case breaks that: a sender that
      // has not yet read that this ID's previous holder left sets the bit and signals the old
      // eventfd (docs/header.md). A slow look at the bit while asleep undoes it.
      const check = setInterval(() => {
        if (!this.#peer.closed && this.#bits.pending()) this.#wake?.();
      }, STALE_BIT_CHECK_MS);
      check.unref();
      this.#wake = () => {
        clearInterval(check);
        this.#wake = null;
        this.#notified = false;
        resolve();
      };
    });
  }

  #live(): void {
    if (this.#closed || this.#peer.closed) throw new ClosedError('BitmaskDoorbell');
  }
}
