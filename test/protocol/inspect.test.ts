/** inspectRegion: the header's bits and leases, and channels found wherever they are, from the bytes alone. */
import { describe, expect, it } from 'vitest';
import { CHANNEL_MAGIC, Word } from '../../lib/protocol/channel-layout.js';
import { BitWords, headerLayout, LeaseWords, writeHeader } from '../../lib/protocol/header.js';
import { inspectRegion } from '../../lib/protocol/inspect.js';
import { writeChannelHeader } from '../../lib/protocol/channel-layout.js';

describe('inspectRegion', () => {
  it('a plain region: no header, channels from byte 0', () => {
    const buffer = new ArrayBuffer(1 << 16);
    writeChannelHeader(buffer, 0, { capacity: 1024, producer: 3, consumer: 4 });
    writeChannelHeader(buffer, 8192, { capacity: 64, producer: 4, consumer: 3 });
    const w = new Uint32Array(buffer);
    w[8192 / 4 + Word.head] = 40;
    w[8192 / 4 + Word.tail] = 8;
    w[8192 / 4 + Word.closed] = 1;
    const s = inspectRegion(buffer);
    expect(s).toMatchObject({ size: 1 << 16, header: null, headerError: null, scanned: 1 << 16 });
    expect(s.channels).toEqual([
      { offset: 0, producer: 3, consumer: 4, capacity: 1024, used: 0, closed: false, waiting: false },
      { offset: 8192, producer: 4, consumer: 3, capacity: 64, used: 32, closed: true, waiting: false },
    ]);
  });

  it('a bitmask region: live and pending bits, leases, channels after the header; head/tail wrapping', () => {
    const buffer = new ArrayBuffer(1 << 16);
    const layout = headerLayout(64);
    writeHeader(buffer, layout);
    new BitWords(buffer, layout.liveOffset, layout.words).set(0);
    new BitWords(buffer, layout.liveOffset, layout.words).set(33);
    new BitWords(buffer, layout.pendingOffset, layout.words).set(33);
    new LeaseWords(buffer, layout).renew(33);
    writeChannelHeader(buffer, layout.dataOffset + 64, { capacity: 256, producer: 0, consumer: 33 });
    const w = new Uint32Array(buffer);
    const base = (layout.dataOffset + 64) / 4;
    w[base + Word.head] = 16;
    w[base + Word.tail] = 0xfffffff8; // the tail just below 2^32, the head wrapped
    w[base + Word.waiting] = 1;
    const s = inspectRegion(buffer);
    expect(s.header).toEqual({ maxPeers: 64, dataOffset: 4096, live: [0, 33], pending: [33], leases: [{ id: 33, lease: 1 }] });
    expect(s.channels).toEqual([{ offset: 4160, producer: 0, consumer: 33, capacity: 256, used: 24, closed: false, waiting: true }]);
    expect(s.scanned).toBe((1 << 16) - 4096);
  });

  it('the magic by chance in data is not a channel; the scan limit is kept; a broken header is said', () => {
    const buffer = new ArrayBuffer(1 << 16);
    new Uint32Array(buffer)[1024 / 4] = CHANNEL_MAGIC; // version 0: not a channel
    writeChannelHeader(buffer, 32768, { capacity: 64, producer: 1, consumer: 2 });
    expect(inspectRegion(buffer).channels.map((c) => c.offset)).toEqual([32768]);
    expect(inspectRegion(buffer, { scanLimit: 16384 }).channels).toEqual([]);
    const layout = headerLayout(64);
    writeHeader(buffer, layout);
    new DataView(buffer).setUint32(20, 7, true); // words: inconsistent
    const s = inspectRegion(buffer);
    expect(s.header).toBeNull();
    expect(s.headerError).toMatch(/inconsistent/);
  });
});
