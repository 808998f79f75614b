/**
 * The level-triggered bitmask doorbell (the 2010 review's proposal), as an API. One pending
 * bit per peer in the shared header: a sender that finds the receiver's bit set does nothing;
 * only the 0->1 edge writes the receiver's eventfd; the receiver drains, works, clears its bit
 * and re-checks. The receive side here enforces that rule, so no wakeup is ever lost.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { ClosedError, InUseError } from '../core/errors.js';
import { COUNTER_INDEX, UNKNOWN_PEER, type DoorbellCounters, type NativeDoorbell } from '../sys/binding.js';
import type { Peer } from '../network/peer.js';
import * as check from '../core/validate.js';
import { lowBuffer } from '../sys/shared-memory.js';

/**
 * Peers whose pending bit a receive loop serves. One loop per peer: the bit stands for all of a
 * peer's work, and a second loop re-checking only its own could claim the bit and leave the
 * other asleep with work pending (channels share the peer's one loop through its reactor).
 */
const receiving = new WeakSet<Peer>();

/** @internal Whether a receive loop serves `peer`'s pending bit now (the reactor checks before it starts one). */
export function hasReceiveLoop(peer: Peer): boolean {
  return receiving.has(peer);
}

/** How often a sleeping receiver looks at its own bit (see #nextInterrupt). */
const STALE_BIT_CHECK_MS = 1000;

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
  readonly #edge: (dest: number) => number;
  // The pending words as 32-bit words, the width every party uses on them (docs/header.md).
  readonly #pending32: Int32Array;
  // Shared with the native counters: the fast path counts where the native code does.
  readonly #counts: Float64Array;
  // Peers that can be rung: a bit must never be set for a peer nobody can signal.
  readonly #known: Uint8Array;
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
   * Over a peer connected with `bitmask: true`; rings and wakeups use vector 0. `onClear` is
   * told of every clear of the own bit (the device model counts it as a register write).
   */
  constructor(peer: Peer, options: { onClear?: () => void } = {}) {
    this.#peer = peer;
    this.#onClear = options.onClear;
    const header = peer.header; // throws unless the peer has the bitmask header
    this.#native = peer.nativeDoorbell;
    this.#edge = this.#native.edge;
    this.#pending32 = new Int32Array(lowBuffer(peer.shm), header.pendingOffset, header.words * 2);
    this.#counts = new Float64Array(this.#native.countersBuffer);
    this.#known = new Uint8Array(header.maxPeers);
    this.#known[peer.id] = 1;
    for (const { id } of peer.peers()) if (id < header.maxPeers) this.#known[id] = 1;
    peer.on('peer-joined', this.#onJoined);
    peer.on('peer-left', this.#onLeft);
    peer.on('interrupt', this.#onInterrupt);
    peer.once('close', this.#onClose);
  }

  readonly #onJoined = (id: number): void => {
    if (id < this.#known.length) this.#known[id] = 1;
  };
  readonly #onLeft = (id: number): void => {
    if (id < this.#known.length) this.#known[id] = 0;
  };

  get id(): number {
    return this.#peer.id;
  }

  /**
   * Publish your work in shared memory first, then ring. Returns true if this ring made the
   * receiver's 0->1 edge (and wrote its eventfd), false if it was suppressed (bit already set).
   */
  ring(dest: number): boolean {
    if (this.#known[dest] !== 1 || this.#closed) throw this.#ringError(dest);
    const bit = 1 << (dest & 31);
    // Atomics.or is a sequentially consistent read-modify-write, i.e. a full fence: the
    // caller's stores of the work cannot pass it (the fence of the protocol's step 2), and it
    // tests and sets the bit in one step. A suppressed ring ends here, with no crossing into C++.
    if ((Atomics.or(this.#pending32, dest >> 5, bit) & bit) !== 0) {
      this.#counts[COUNTER_INDEX.rings]!++;
      this.#counts[COUNTER_INDEX.suppressed]!++;
      return false;
    }
    // This ring made the 0->1 edge: signal (native; counted there). If the native side cannot
    // (the peer's eventfds went before this doorbell heard it left), take the bit back: set with
    // nobody signalled, it would suppress every later ring to that ID.
    if (this.#edge(dest) === UNKNOWN_PEER) {
      Atomics.and(this.#pending32, dest >> 5, ~bit);
      throw this.#ringError(dest);
    }
    return true;
  }

  /** Rings every other live peer; returns how many were signalled (the others were busy). */
  broadcast(): number {
    this.#live();
    return this.#native.broadcast();
  }

  /** Whether this peer's own pending bit is set. */
  pending(): boolean {
    this.#live();
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
        if (busyPoll > 0 && (await this.#poll(hasWork, busyPoll, stopped))) continue;
        this.#native.ack();
        this.#onClear?.();
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
    this.#peer.off('peer-joined', this.#onJoined);
    this.#peer.off('peer-left', this.#onLeft);
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
      // Asleep, the own bit is 0 unless a ring is on its way. One case breaks that: a sender that
      // has not yet read that this ID's previous holder left sets the bit and signals the old
      // eventfd (docs/header.md). A slow look at the bit while asleep undoes it.
      const check = setInterval(() => {
        if (!this.#peer.closed && this.#native.pending() === 1) this.#wake?.();
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

  #ringError(dest: number): Error {
    if (this.#closed || this.#peer.closed) return new ClosedError('BitmaskDoorbell');
    check.integer('dest', dest, 0, 65535);
    return new RangeError(`peer ${dest} is not known to peer ${this.#peer.id}`);
  }
}
