/**
 * The bitmask-mode header at the start of the shared memory (byte table: docs/header.md).
 * The server writes it once and maintains the live bits; peers validate it and use the
 * pending bits through their interrupt tables (lib/sys/interrupt-table.ts).
 */
import { HeaderError } from '../core/errors.js';

/** "IVSHMBM1" read as a little-endian u64. */
export const HEADER_MAGIC = 0x314d424d48535649n;
export const HEADER_VERSION = 1;
const PAGE = 4096;
const CACHE_LINE = 64;

export const HeaderField = {
  magic: 0, // u64
  version: 8, // u32
  dataOffset: 12, // u32: where the application's bytes begin (page aligned)
  maxPeers: 16, // u32: bits per word set (a multiple of 64): peer IDs are 0..maxPeers-1
  words: 20, // u32: 64-bit words in each bit set
  pendingOffset: 24, // u32
  liveOffset: 28, // u32
  leaseOffset: 32, // u32: the peers' lease words; 0 in a header without them
} as const;

export interface HeaderLayout {
  readonly maxPeers: number;
  readonly words: number;
  readonly pendingOffset: number;
  readonly liveOffset: number;
  /** Byte offset of the lease words (one u32 per peer ID), 0 if the header has none. */
  readonly leaseOffset: number;
  readonly dataOffset: number;
}

const alignUp = (n: number, to: number): number => Math.ceil(n / to) * to;

/** The layout for `maxPeers` peers (rounded up to whole 64-bit words). */
export function headerLayout(maxPeers: number): HeaderLayout {
  const words = Math.max(1, Math.ceil(maxPeers / 64));
  // Pending words are written by every sender: keep them off the line of the read-mostly
  // fields, and the server-written live words off theirs.
  const pendingOffset = CACHE_LINE;
  const liveOffset = alignUp(pendingOffset + words * 8, CACHE_LINE);
  // Lease words: each written by one peer, read by the server; off the bit words' lines.
  const leaseOffset = alignUp(liveOffset + words * 8, CACHE_LINE);
  const dataOffset = alignUp(leaseOffset + words * 64 * 4, PAGE);
  return { maxPeers: words * 64, words, pendingOffset, liveOffset, leaseOffset, dataOffset };
}

/** Writes a fresh header (all bits clear) into `buffer`. */
export function writeHeader(buffer: ArrayBuffer, layout: HeaderLayout): void {
  if (buffer.byteLength < layout.dataOffset) {
    throw new RangeError(`shared memory of ${buffer.byteLength} bytes cannot hold a ${layout.dataOffset}-byte header`);
  }
  new Uint8Array(buffer, 0, layout.dataOffset).fill(0);
  const view = new DataView(buffer);
  view.setUint32(HeaderField.version, HEADER_VERSION, true);
  view.setUint32(HeaderField.dataOffset, layout.dataOffset, true);
  view.setUint32(HeaderField.maxPeers, layout.maxPeers, true);
  view.setUint32(HeaderField.words, layout.words, true);
  view.setUint32(HeaderField.pendingOffset, layout.pendingOffset, true);
  view.setUint32(HeaderField.liveOffset, layout.liveOffset, true);
  view.setUint32(HeaderField.leaseOffset, layout.leaseOffset, true);
  // The magic last: a peer that sees it sees a complete header.
  Atomics.store(new BigInt64Array(buffer, 0, 1), 0, BigInt.asIntN(64, HEADER_MAGIC));
}

/** Reads and checks the header; HeaderError if it is missing, foreign or inconsistent. */
export function readHeader(buffer: ArrayBuffer): HeaderLayout {
  if (buffer.byteLength < 64) throw new HeaderError(`shared memory of ${buffer.byteLength} bytes has no room for a header`);
  const view = new DataView(buffer);
  const magic = view.getBigUint64(HeaderField.magic, true);
  if (magic !== HEADER_MAGIC) {
    throw new HeaderError(
      `no bitmask header in the shared memory (magic 0x${magic.toString(16)}, expected 0x${HEADER_MAGIC.toString(16)}): ` +
        'start the server with --bitmask',
    );
  }
  const version = view.getUint32(HeaderField.version, true);
  if (version !== HEADER_VERSION) {
    throw new HeaderError(`bitmask header version ${version} is not supported (this build reads version ${HEADER_VERSION})`);
  }
  const layout: HeaderLayout = {
    dataOffset: view.getUint32(HeaderField.dataOffset, true),
    maxPeers: view.getUint32(HeaderField.maxPeers, true),
    words: view.getUint32(HeaderField.words, true),
    pendingOffset: view.getUint32(HeaderField.pendingOffset, true),
    liveOffset: view.getUint32(HeaderField.liveOffset, true),
    leaseOffset: view.getUint32(HeaderField.leaseOffset, true),
  };
  if (layout.dataOffset > buffer.byteLength) {
    throw new HeaderError(
      `the shared memory is ${buffer.byteLength} bytes, smaller than the ${layout.dataOffset} bytes its bitmask header claims (truncated by someone who holds it?)`,
    );
  }
  const end = (offset: number): number => offset + layout.words * 8;
  if (
    layout.words < 1 ||
    layout.maxPeers !== layout.words * 64 ||
    layout.pendingOffset % 8 !== 0 ||
    layout.liveOffset % 8 !== 0 ||
    end(layout.pendingOffset) > layout.dataOffset ||
    end(layout.liveOffset) > layout.dataOffset ||
    layout.leaseOffset % 4 !== 0 ||
    (layout.leaseOffset !== 0 &&
      (layout.leaseOffset < Math.max(end(layout.pendingOffset), end(layout.liveOffset)) ||
        layout.leaseOffset + layout.maxPeers * 4 > layout.dataOffset)) ||
    layout.dataOffset > buffer.byteLength
  ) {
    throw new HeaderError(`bitmask header is inconsistent: ${JSON.stringify(layout)}`);
  }
  return layout;
}

/**
 * Atomic access to one bit set (pending or live) of the header, from TypeScript. 32-bit words,
 * as everyone else works on them (the interrupt table's pending words): bit `id` is bit
 * id % 32 of word id / 32, the same bit as in the header's little-endian 64-bit words.
 */
export class BitWords {
  readonly #words: Int32Array;
  /** `words`: the header's 64-bit words per bit set. */
  constructor(buffer: ArrayBuffer, offset: number, words: number) {
    this.#words = new Int32Array(buffer, offset, words * 2);
  }
  set(id: number): void {
    Atomics.or(this.#words, id >> 5, 1 << (id & 31));
  }
  clear(id: number): void {
    Atomics.and(this.#words, id >> 5, ~(1 << (id & 31)));
  }
  has(id: number): boolean {
    return (Atomics.load(this.#words, id >> 5) & (1 << (id & 31))) !== 0;
  }
  /** The IDs whose bits are set, ascending. */
  ids(): number[] {
    const out: number[] = [];
    for (let w = 0; w < this.#words.length; w++) {
      const word = Atomics.load(this.#words, w);
      for (let b = 0; b < 32; b++) if ((word >>> b) & 1) out.push(w * 32 + b);
    }
    return out;
  }
}

/**
 * The lease words: one u32 per peer ID, written only by the process that holds the ID (a
 * counter it advances while it runs, never 0; 0 when it closes) and read by the server, which
 * takes a lease that stops advancing as that process gone (docs/header.md). Needed where the
 * server cannot see the process: inside a VM, QEMU stays connected when the program dies.
 */
export class LeaseWords {
  readonly #words: Int32Array;
  constructor(buffer: ArrayBuffer, layout: HeaderLayout) {
    if (layout.leaseOffset === 0) throw new RangeError('this header has no lease words');
    this.#words = new Int32Array(buffer, layout.leaseOffset, layout.maxPeers);
  }
  read(id: number): number {
    return Atomics.load(this.#words, id) >>> 0;
  }
  /** Advances `id`'s lease (skipping 0, which means "no lease"). */
  renew(id: number): void {
    const next = (Atomics.load(this.#words, id) + 1) | 0;
    Atomics.store(this.#words, id, next === 0 ? 1 : next);
  }
  clear(id: number): void {
    Atomics.store(this.#words, id, 0);
  }
}
