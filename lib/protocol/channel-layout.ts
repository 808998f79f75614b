/**
 * The byte layout of one message ring in shared memory (table: docs/channel.md), and the
 * checks a reader makes before trusting it.
 */
import { CorruptError } from '../core/errors.js';

/** "IVCH" as a little-endian u32. */
export const CHANNEL_MAGIC = 0x48435649;
export const CHANNEL_VERSION = 1;
export const CHANNEL_HEADER_BYTES = 256;

/** Word indices (u32) in the channel header. Producer-written, consumer-written and shared
 * words sit on separate cache lines so that the two sides do not fight over one line. */
export const Word = {
  magic: 0,
  version: 1,
  capacity: 2,
  producer: 3,
  consumer: 4,
  /** 0 open; 1 the producer closed the stream (everything before head is still to be read). */
  closed: 5,
  head: 64 / 4, // producer: bytes published, free-running modulo 2^32
  tail: 128 / 4, // consumer: bytes consumed
  waiting: 192 / 4, // producer: 1 while it waits for space (the consumer rings it then)
} as const;

/** A record's length word that means "skip to the start of the ring". */
export const PAD = 0xffffffff;
/** Record = 4-byte length + payload, padded to 8 bytes. */
export const RECORD_ALIGN = 8;

export const recordSize = (length: number): number => (4 + length + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1);

/** The largest message a ring of `capacity` bytes carries: any record then fits after a pad. */
export const maxMessage = (capacity: number): number => capacity / 2 - RECORD_ALIGN;

/** Bytes a channel of `capacity` occupies. */
export const channelBytes = (capacity: number): number => CHANNEL_HEADER_BYTES + capacity;

export function checkCapacity(capacity: number): number {
  if (!Number.isInteger(capacity) || capacity < 64 || capacity > 2 ** 30 || (capacity & (capacity - 1)) !== 0) {
    throw new RangeError(`capacity must be a power of two from 64 to 2^30 bytes, got ${capacity}`);
  }
  return capacity;
}

export interface ChannelInfo {
  readonly capacity: number;
  readonly producer: number;
  readonly consumer: number;
}

/** Reads and checks a channel header at `offset`; CorruptError if it is not a valid one. */
export function readChannelHeader(buffer: ArrayBuffer, offset: number): ChannelInfo {
  if (offset % 64 !== 0 || offset + CHANNEL_HEADER_BYTES > buffer.byteLength) {
    throw new RangeError(`a channel header at ${offset} must be 64-byte aligned and inside the ${buffer.byteLength}-byte memory`);
  }
  const w = new Uint32Array(buffer, offset, CHANNEL_HEADER_BYTES / 4);
  const magic = Atomics.load(w, Word.magic);
  if (magic !== CHANNEL_MAGIC) {
    throw new CorruptError(`no channel at offset ${offset}: magic 0x${magic.toString(16)}, expected 0x${CHANNEL_MAGIC.toString(16)}`);
  }
  if (w[Word.version] !== CHANNEL_VERSION) {
    throw new CorruptError(`channel at ${offset} has version ${w[Word.version]}, this build reads ${CHANNEL_VERSION}`);
  }
  const capacity = w[Word.capacity]!;
  if (capacity < 64 || (capacity & (capacity - 1)) !== 0 || offset + channelBytes(capacity) > buffer.byteLength) {
    throw new CorruptError(`channel at ${offset} has an impossible capacity ${capacity}`);
  }
  return { capacity, producer: w[Word.producer]!, consumer: w[Word.consumer]! };
}

/** Writes a fresh, empty channel header (magic last, so a reader sees all or nothing). */
export function writeChannelHeader(buffer: ArrayBuffer, offset: number, info: ChannelInfo): void {
  checkCapacity(info.capacity);
  if (offset % 64 !== 0 || offset + channelBytes(info.capacity) > buffer.byteLength) {
    throw new RangeError(
      `a channel of ${info.capacity} bytes at ${offset} must be 64-byte aligned and fit in the ${buffer.byteLength}-byte memory`,
    );
  }
  const w = new Uint32Array(buffer, offset, CHANNEL_HEADER_BYTES / 4);
  w.fill(0);
  w[Word.version] = CHANNEL_VERSION;
  w[Word.capacity] = info.capacity;
  w[Word.producer] = info.producer;
  w[Word.consumer] = info.consumer;
  Atomics.store(w, Word.magic, CHANNEL_MAGIC);
}
