/**
 * The interrupt table of one peer: its eventfds by (peer, vector) — its own, whose signals wake
 * it, and every other peer's, which it rings — and, over the bitmask header, the level-triggered
 * ring (PendingWords). The one TypeScript owner of the native InterruptTable: nothing above it
 * sees its fds, its buffers or its return codes.
 */
import { native, type NativeInterruptTable } from './binding.js';
import { ClosedError, LoadError } from '../core/errors.js';
import { registersHandle, type DeviceRegisters } from './registers.js';
import { FdWatcher } from './watcher.js';
import * as check from '../core/validate.js';

/** Kernel crossings and bitmask events of one peer, counted where they happen. */
export interface InterruptCounters {
  /** Rings of a pending bit (a bitmask ring, and each peer a broadcast addressed). */
  rings: number;
  /** Rings that found the bit already set: no system call at all. */
  suppressed: number;
  /** 0->1 edges made (each one an eventfd write). */
  signals: number;
  /** write(2) on an eventfd. */
  eventfdWrites: number;
  /** 32-bit stores to the Doorbell register (a device in a VM: each one an exit to QEMU). */
  doorbellWrites: number;
  /** read(2) on an eventfd (including the one that finds EAGAIN). */
  eventfdReads: number;
  /** Times the event loop woke this peer for an own eventfd. */
  wakeups: number;
  /** Wakeups that found the eventfd already drained. */
  spurious: number;
  /** Wakeups that delivered an interrupt. */
  interrupts: number;
  /** Clears of the own pending bit. */
  acks: number;
}
type CounterName = keyof InterruptCounters;

// The order of the counters is the addon's (its one list, native/interrupt_table.h); this side
// only checks that the names are the ones it types.
const TYPED = { rings: 0, suppressed: 0, signals: 0, eventfdWrites: 0, doorbellWrites: 0, eventfdReads: 0, wakeups: 0, spurious: 0, interrupts: 0, acks: 0 } satisfies InterruptCounters;
const NAMES = native.InterruptTable.counterNames as readonly CounterName[];
if (NAMES.length !== Object.keys(TYPED).length || !NAMES.every((n) => Object.hasOwn(TYPED, n))) {
  throw new LoadError(
    `the native addon counts ${NAMES.join(', ')}; this library knows ${Object.keys(TYPED).join(', ')}. Rebuild the addon: \`npm rebuild ivshmem\``,
  );
}
const RINGS = NAMES.indexOf('rings');
const SUPPRESSED = NAMES.indexOf('suppressed');
const SIGNALS = NAMES.indexOf('signals');
const ACKS = NAMES.indexOf('acks');

/** Where the header's bit words are (a HeaderLayout is one). */
export interface BitWordsLayout {
  readonly words: number;
  readonly pendingOffset: number;
  readonly liveOffset: number;
}

export interface InterruptTableOptions {
  /** Own peer ID. */
  self: number;
  /** An own vector was signalled (and drained): `count` signals coalesced. On the event loop. */
  onInterrupt: (vector: number, count: number) => void;
  /** Bitmask mode: the header's bit words in `memory` (the low buffer of the shared memory). */
  bitmask?: { memory: ArrayBuffer; layout: BitWordsLayout };
  /**
   * Doorbell mode (a guest's device): every signal, own ID included, is one store of
   * `dest << 16 | vector` to the register at `offset`; own eventfds (add) only wake. Peers are
   * rung on the vectors setVectors() gives them.
   */
  doorbell?: { registers: DeviceRegisters; offset: number };
}

export class InterruptTable implements Disposable {
  readonly #native: NativeInterruptTable;
  readonly #self: number;
  readonly #signal: (dest: number, vector: number) => boolean;
  readonly #wake: (vector: number) => number;
  // Native memory, read in place: the only record of who can be rung, and the counters.
  readonly #vectors: Uint16Array;
  readonly #counts: Float64Array;
  readonly #onInterrupt: (vector: number, count: number) => void;
  readonly #watchers: FdWatcher[] = [];
  // Held for as long as the table: the registers' finalizer would unmap them under the doorbell.
  readonly #doorbell: DeviceRegisters | null;
  #closed = false;
  /** The level-triggered ring over the bitmask header; null without one. */
  readonly pendingWords: PendingWords | null;

  constructor(options: InterruptTableOptions) {
    this.#self = check.integer('self', options.self, 0, 65535);
    if (typeof options.onInterrupt !== 'function') throw new TypeError('onInterrupt must be a function');
    this.#onInterrupt = options.onInterrupt;
    this.#native = new native.InterruptTable(this.#self);
    this.#signal = this.#native.signal;
    this.#wake = this.#native.wake;
    this.#vectors = new Uint16Array(this.#native.vectorsBuffer);
    this.#counts = new Float64Array(this.#native.countersBuffer);
    this.#doorbell = options.doorbell?.registers ?? null;
    try {
      if (options.doorbell !== undefined) this.#native.setDoorbell(registersHandle(options.doorbell.registers), options.doorbell.offset);
      this.pendingWords =
        options.bitmask === undefined
          ? null
          : new PendingWords(this, options.bitmask.memory, options.bitmask.layout, this.#vectors, this.#counts, this.#signal);
    } catch (error) {
      this.#native.close();
      throw error;
    }
  }

  get self(): number {
    return this.#self;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Adopts `fd`, an eventfd received for `peer`, as that peer's next vector (returned): the table
   * holds the only copy and closes it. For the own ID, its signals are delivered to onInterrupt.
   * Whatever fails, `fd` is closed (e.g. it is not an eventfd: a system error, code EINVAL).
   */
  add(peer: number, fd: number): number {
    check.fd('fd', fd);
    if (this.#closed) {
      native.closeFd(fd);
      throw new ClosedError('InterruptTable');
    }
    const vector = this.#native.add(peer, fd);
    if (peer === this.#self) this.#watch(vector, fd);
    return vector;
  }

  /** Closes the eventfds of `peer` (a peer that left). */
  remove(peer: number): void {
    if (this.#closed) return;
    check.integer('peer', peer, 0, 65535);
    if (peer === this.#self) throw new RangeError('the own vectors go only with the table');
    this.#native.remove(peer);
  }

  /**
   * Doorbell mode: `peer` can be rung on vectors 0..vectors-1 from now on (0: no longer). For
   * every peer but one with own eventfds (added with add()).
   */
  setVectors(peer: number, vectors: number): void {
    if (this.#closed) throw new ClosedError('InterruptTable');
    this.#native.setVectors(check.integer('peer', peer, 0, 65535), check.integer('vectors', vectors, 0, 65535));
  }

  /** Vectors held for `peer` (own ID included); 0 if it cannot be rung. */
  vectorsOf(peer: number): number {
    return this.#vectors[peer] ?? 0;
  }

  /** Other peers with eventfds and their vector counts, in the order their first vector arrived. */
  peers(): { id: number; vectors: number }[] {
    if (this.#closed) return [];
    return this.#native.peers().map((id) => ({ id, vectors: this.#vectors[id]! }));
  }

  /** Writes the eventfd of (`peer`, `vector`), or in doorbell mode the Doorbell register: false if it cannot be rung. */
  signal(peer: number, vector: number): boolean {
    if (this.#closed) throw new ClosedError('InterruptTable');
    return this.#signal(peer, vector);
  }

  /** Counted since creation or the last reset; all 0 once closed. */
  counters(): InterruptCounters {
    const out = { ...TYPED };
    if (!this.#closed) for (let i = 0; i < NAMES.length; i++) out[NAMES[i]!] = this.#counts[i]!;
    return out;
  }

  resetCounters(): void {
    if (!this.#closed) this.#counts.fill(0);
  }

  /** Stops watching the own eventfds, then closes every eventfd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Watchers before their fds: a poll on a closed (or reused) fd number must never run.
    for (const w of this.#watchers) w.close();
    this.#native.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #watch(vector: number, fd: number): void {
    const watcher = new FdWatcher(fd);
    watcher.on('readable', () => {
      if (this.#closed) return;
      // Drain first (counted natively), then deliver; a level-triggered poll would spin otherwise.
      const count = this.#wake(vector);
      if (count > 0) this.#onInterrupt(vector, count);
    });
    watcher.start();
    this.#watchers.push(watcher);
  }
}

// Bits of a 32-bit mask; the lowest set bit's index.
function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}
function lowestBit(x: number): number {
  return 31 - Math.clz32(x & -x);
}

/**
 * The bitmask header's pending bits as one peer sets, clears and tests them: the level-triggered
 * ring (docs/doorbells.md), written once. Every bit operation is a sequentially consistent
 * Atomics operation on a 32-bit word (the width every party uses, docs/header.md); only the
 * 0->1 edge crosses into C++, for its eventfd write.
 */
export class PendingWords {
  readonly #table: InterruptTable;
  readonly #pendingWords: Int32Array;
  readonly #liveWords: Int32Array;
  // IDs that have a bit.
  readonly #limit: number;
  readonly #selfWord: number;
  readonly #selfBit: number;
  readonly #vectors: Uint16Array;
  readonly #counts: Float64Array;
  readonly #signal: (dest: number, vector: number) => boolean;

  /** @internal Made by the InterruptTable that it rings through. */
  constructor(
    table: InterruptTable,
    memory: ArrayBuffer,
    layout: BitWordsLayout,
    vectors: Uint16Array,
    counts: Float64Array,
    signal: (dest: number, vector: number) => boolean,
  ) {
    this.#table = table;
    this.#pendingWords = new Int32Array(memory, layout.pendingOffset, layout.words * 2);
    this.#liveWords = new Int32Array(memory, layout.liveOffset, layout.words * 2);
    this.#limit = layout.words * 64;
    if (table.self >= this.#limit) throw new RangeError(`peer ID ${table.self} is beyond the header's ${this.#limit} bits`);
    this.#selfWord = table.self >> 5;
    this.#selfBit = 1 << (table.self & 31);
    this.#vectors = vectors;
    this.#counts = counts;
    this.#signal = signal;
  }

  /**
   * Sets `dest`'s pending bit; true if that made its 0->1 edge (and wrote its eventfd), false if
   * the bit was set already (suppressed). The caller has published its work.
   */
  ring(dest: number): boolean {
    // A bit must never be set for a peer nobody can signal: it would suppress every later ring.
    // (A closed table knows no peer: this check also stops rings after close.)
    if (!(this.#vectors[dest]! > 0) || dest >= this.#limit) throw this.#ringError(dest);
    const bit = 1 << (dest & 31);
    // Atomics.or is a sequentially consistent read-modify-write, i.e. a full fence: the
    // caller's stores of the work cannot pass it (the fence of the protocol's step 2), and it
    // tests and sets the bit in one step. A suppressed ring ends here, with no crossing into C++.
    if ((Atomics.or(this.#pendingWords, dest >> 5, bit) & bit) !== 0) {
      this.#counts[RINGS]!++;
      this.#counts[SUPPRESSED]!++;
      return false;
    }
    this.#edge(dest, bit);
    return true;
  }

  /**
   * Sets the bits of every other live peer that can be rung, word by word, and signals exactly
   * those whose bits were clear; returns how many. A failed signal is thrown after the others.
   */
  broadcast(): number {
    this.#open();
    let signalled = 0;
    let failure: { error: unknown } | null = null;
    for (let w = 0; w < this.#liveWords.length; w++) {
      let mask = Atomics.load(this.#liveWords, w);
      if (w === this.#selfWord) mask &= ~this.#selfBit;
      for (let rest = mask; rest !== 0; rest &= rest - 1) {
        if (this.#vectors[w * 32 + lowestBit(rest)] === 0) mask &= ~(rest & -rest);
      }
      if (mask === 0) continue;
      const old = Atomics.or(this.#pendingWords, w, mask);
      const busy = popcount(mask & old);
      this.#counts[RINGS]! += busy;
      this.#counts[SUPPRESSED]! += busy;
      for (let edges = mask & ~old; edges !== 0; edges &= edges - 1) {
        const dest = w * 32 + lowestBit(edges);
        try {
          this.#edge(dest, 1 << (dest & 31));
          signalled++;
        } catch (error) {
          failure ??= { error };
        }
      }
    }
    if (failure !== null) throw failure.error;
    return signalled;
  }

  /** Clears the own bit: true if it was set. The caller must then re-check its work. */
  ack(): boolean {
    this.#open();
    this.#counts[ACKS]!++;
    return (Atomics.and(this.#pendingWords, this.#selfWord, ~this.#selfBit) & this.#selfBit) !== 0;
  }

  /** Sets the own bit without signalling (senders stay quiet): true if it was set already. */
  claim(): boolean {
    this.#open();
    return (Atomics.or(this.#pendingWords, this.#selfWord, this.#selfBit) & this.#selfBit) !== 0;
  }

  /** Whether the own bit is set. */
  pending(): boolean {
    this.#open();
    return (Atomics.load(this.#pendingWords, this.#selfWord) & this.#selfBit) !== 0;
  }

  /** The 0->1 edge of `dest`'s bit is made: count it and signal, or take the bit back. */
  #edge(dest: number, bit: number): void {
    this.#counts[RINGS]!++;
    this.#counts[SIGNALS]!++;
    let signalled: boolean;
    try {
      signalled = this.#signal(dest, 0);
    } catch (error) {
      // Set with nobody woken, the bit would suppress every later ring to `dest`.
      Atomics.and(this.#pendingWords, dest >> 5, ~bit);
      throw error;
    }
    if (!signalled) {
      Atomics.and(this.#pendingWords, dest >> 5, ~bit);
      throw this.#ringError(dest);
    }
  }

  #open(): void {
    if (this.#table.closed) throw new ClosedError('InterruptTable');
  }

  #ringError(dest: number): Error {
    if (this.#table.closed) return new ClosedError('InterruptTable');
    check.integer('dest', dest, 0, 65535);
    if (dest >= this.#limit) return new RangeError(`peer ${dest} has no pending bit (the header has ${this.#limit})`);
    return new RangeError(`peer ${dest} is not known to peer ${this.#table.self}`);
  }
}
