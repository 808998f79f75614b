/**
 * lib/protocol/channel-layout.ts on plain memory: the constants against docs/channel.md, recordSize,
 * maxMessage, channelBytes, checkCapacity, and writeChannelHeader/readChannelHeader — the round
 * trip and every validation branch (RangeError for where a header is asked to be, CorruptError
 * for what is found there).
 */
import { describe, expect, it } from 'vitest';
import {
  CHANNEL_HEADER_BYTES,
  CHANNEL_MAGIC,
  CHANNEL_VERSION,
  PAD,
  RECORD_ALIGN,
  Word,
  channelBytes,
  checkCapacity,
  maxMessage,
  readChannelHeader,
  recordSize,
  writeChannelHeader,
} from '../../lib/protocol/channel-layout.js';
import { CorruptError, ErrorCodes } from '../../lib/index.js';

const POWERS = Array.from({ length: 25 }, (_, i) => 2 ** (i + 6)); // 64 … 2^30

function caught(f: () => unknown): unknown {
  try {
    f();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

describe('constants (docs/channel.md)', () => {
  it('magic "IVCH", version 1, a 256-byte header', () => {
    const bytes = new Uint8Array(new Uint32Array([CHANNEL_MAGIC]).buffer);
    expect(String.fromCharCode(...bytes)).toBe('IVCH');
    expect(CHANNEL_MAGIC).toBe(0x48435649);
    expect(CHANNEL_VERSION).toBe(1);
    expect(CHANNEL_HEADER_BYTES).toBe(256);
    expect(PAD).toBe(0xffffffff);
    expect(RECORD_ALIGN).toBe(8);
  });

  it('field byte offsets as in the table; head, tail and waiting each on their own cache line', () => {
    const bytesOf = Object.fromEntries(Object.entries(Word).map(([k, v]) => [k, v * 4]));
    expect(bytesOf).toEqual({ magic: 0, version: 4, capacity: 8, producer: 12, consumer: 16, closed: 20, head: 64, tail: 128, waiting: 192 });
    const line = (w: number): number => Math.floor((w * 4) / 64);
    const lines = [line(Word.magic), line(Word.head), line(Word.tail), line(Word.waiting)];
    expect(new Set(lines).size).toBe(4);
    expect(Word.waiting * 4 + 4).toBeLessThanOrEqual(CHANNEL_HEADER_BYTES);
  });
});

describe('sizes', () => {
  it('recordSize: 4-byte length + payload, padded to 8', () => {
    expect([0, 1, 4, 5, 12, 13, 20, 21].map(recordSize)).toEqual([8, 8, 8, 16, 16, 24, 24, 32]);
    for (let n = 0; n < 5000; n++) {
      const s = recordSize(n);
      expect(s % 8).toBe(0);
      expect(s).toBeGreaterThanOrEqual(4 + n);
      expect(s).toBeLessThan(4 + n + 8);
    }
  });

  it('maxMessage = capacity/2 - 8: its record is exactly half the ring, and fits after any pad', () => {
    for (const c of POWERS) {
      const max = maxMessage(c);
      expect(max).toBe(c / 2 - 8);
      expect(recordSize(max)).toBe(c / 2);
      // A pad is written only when the space left before the end is smaller than the record,
      // so it is at most recordSize - 8: pad + record still fits in the ring.
      expect(recordSize(max) - 8 + recordSize(max)).toBeLessThanOrEqual(c);
      // (The bound keeps 4 bytes of slack: messages up to c/2 - 4 have the same record size;
      // from c/2 - 3 on the record is larger than half the ring.)
      expect(recordSize(c / 2 - 4)).toBe(c / 2);
      expect(recordSize(c / 2 - 3)).toBeGreaterThan(c / 2);
    }
    expect(maxMessage(64)).toBe(24);
    expect(maxMessage(4096)).toBe(2040);
  });

  it('channelBytes = 256 + capacity', () => {
    for (const c of POWERS) expect(channelBytes(c)).toBe(256 + c);
  });

  it('checkCapacity accepts every power of two from 64 to 2^30, and nothing else', () => {
    for (const c of POWERS) expect(checkCapacity(c)).toBe(c);
    for (const bad of [0, 1, 2, 32, 63, 65, 96, 100, 4095, 4097, 3 * 1024, -64, 64.5, 2 ** 31, 2 ** 32, NaN, Infinity, -Infinity]) {
      expect(() => checkCapacity(bad), String(bad)).toThrow(RangeError);
    }
    expect(() => checkCapacity('64' as unknown as number)).toThrow(RangeError);
  });
});

describe('writeChannelHeader / readChannelHeader', () => {
  it('round trip at several offsets, capacities and IDs', () => {
    const buffer = new SharedArrayBuffer(1 << 20) as unknown as ArrayBuffer;
    for (const [offset, capacity, producer, consumer] of [
      [0, 64, 0, 1],
      [64, 4096, 65535, 0],
      [4096, 1 << 16, 7, 7],
      [(1 << 20) - channelBytes(1 << 19), 1 << 19, 3, 9],
      [(1 << 20) - channelBytes(64), 64, 1, 2],
    ] as const) {
      writeChannelHeader(buffer, offset, { capacity, producer, consumer });
      expect(readChannelHeader(buffer, offset)).toEqual({ capacity, producer, consumer });
    }
  });

  it('works on a plain (non-shared) ArrayBuffer too', () => {
    const buffer = new ArrayBuffer(8192);
    writeChannelHeader(buffer, 128, { capacity: 4096, producer: 1, consumer: 2 });
    expect(readChannelHeader(buffer, 128)).toEqual({ capacity: 4096, producer: 1, consumer: 2 });
  });

  it('writes a fresh, empty header (closed, head, tail, waiting, reserved all 0) and touches no data byte', () => {
    const buffer = new ArrayBuffer(8192);
    const all = new Uint8Array(buffer);
    all.fill(0xaa);
    writeChannelHeader(buffer, 1024, { capacity: 1024, producer: 4, consumer: 5 });
    const w = new Uint32Array(buffer, 1024, 64);
    expect([w[Word.magic], w[Word.version], w[Word.capacity], w[Word.producer], w[Word.consumer]]).toEqual([CHANNEL_MAGIC, 1, 1024, 4, 5]);
    for (let i = 5; i < 64; i++) expect(w[i], `word ${i}`).toBe(0);
    // Before and after the header: untouched (the data too: a fresh header does not clear records).
    expect(all.subarray(0, 1024).every((b) => b === 0xaa)).toBe(true);
    expect(all.subarray(1024 + 256).every((b) => b === 0xaa)).toBe(true);
  });

  it('write: RangeError for a bad capacity, a misaligned offset, or a channel that does not fit', () => {
    const buffer = new ArrayBuffer(8192);
    const info = { capacity: 4096, producer: 0, consumer: 1 };
    expect(() => writeChannelHeader(buffer, 0, { ...info, capacity: 100 })).toThrow(RangeError);
    expect(() => writeChannelHeader(buffer, 0, { ...info, capacity: 32 })).toThrow(RangeError);
    expect(() => writeChannelHeader(buffer, 32, info)).toThrow(RangeError);
    expect(() => writeChannelHeader(buffer, 8, info)).toThrow(RangeError);
    expect(() => writeChannelHeader(buffer, 8192 - 4096, info)).toThrow(RangeError); // needs 4352
    expect(() => writeChannelHeader(buffer, 8192, info)).toThrow(RangeError);
    expect(() => writeChannelHeader(buffer, 0, { ...info, capacity: 8192 })).toThrow(RangeError);
    // Exactly fitting is fine.
    writeChannelHeader(buffer, 8192 - channelBytes(4096) - (8192 - channelBytes(4096)) % 64, info);
    writeChannelHeader(new ArrayBuffer(channelBytes(4096)), 0, info);
    // Nothing was written by the refused calls at offset 0.
    expect(new Uint32Array(buffer, 0, 1)[0]).toBe(0);
  });

  it('read: RangeError for a misaligned offset or a header outside the memory', () => {
    const buffer = new ArrayBuffer(4096);
    expect(() => readChannelHeader(buffer, 8)).toThrow(RangeError);
    expect(() => readChannelHeader(buffer, 4096 - 192)).toThrow(RangeError); // 64-aligned, header does not fit
    expect(() => readChannelHeader(buffer, 4096)).toThrow(RangeError);
  });

  it('read: CorruptError for no magic, a wrong magic or version, an impossible capacity', () => {
    const buffer = new ArrayBuffer(1 << 16);
    const offset = 4096;
    const w = new Uint32Array(buffer, offset, 64);
    const fresh = (): void => writeChannelHeader(buffer, offset, { capacity: 4096, producer: 1, consumer: 2 });
    const cases: [string, () => void][] = [
      ['no magic yet (a header being written)', () => (w[Word.magic] = 0)],
      ['wrong magic', () => (w[Word.magic] = 0x48435648)],
      ['byte-swapped magic', () => (w[Word.magic] = 0x49564348)],
      ['version 0', () => (w[Word.version] = 0)],
      ['version 2', () => (w[Word.version] = 2)],
      ['capacity 0', () => (w[Word.capacity] = 0)],
      ['capacity 32', () => (w[Word.capacity] = 32)],
      ['capacity 4095', () => (w[Word.capacity] = 4095)],
      ['capacity 4097', () => (w[Word.capacity] = 4097)],
      ['capacity 0xffffffff', () => (w[Word.capacity] = 0xffffffff)],
      ['capacity 2^31', () => (w[Word.capacity] = 2 ** 31)],
      ['capacity past the end of the memory', () => (w[Word.capacity] = 1 << 16)],
    ];
    for (const [what, corrupt] of cases) {
      fresh();
      corrupt();
      const error = caught(() => readChannelHeader(buffer, offset));
      expect(error, what).toBeInstanceOf(CorruptError);
      expect((error as CorruptError).code).toBe(ErrorCodes.CORRUPT);
    }
    // The largest capacity that fits after the offset is accepted.
    fresh();
    w[Word.capacity] = 1 << 15;
    expect(readChannelHeader(buffer, offset).capacity).toBe(1 << 15);
  });
});
