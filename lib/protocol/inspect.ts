/**
 * A snapshot of a region as the layouts describe it — the bitmask header's bits and leases, and
 * every channel found at a 64-byte boundary — read with loads only (never a store), for
 * `ivshmem status`. Pure: it is given the bytes.
 */
import { HeaderError } from '../core/errors.js';
import { CHANNEL_MAGIC, channelBytes, readChannelHeader, Word } from './channel-layout.js';
import { BitWords, readHeader } from './header.js';

export interface HeaderSnapshot {
  readonly maxPeers: number;
  readonly dataOffset: number;
  /** IDs whose live bit is set (the server's: connected and leased). */
  readonly live: number[];
  /** IDs whose pending bit is set (busy or signalled, not yet cleared by them). */
  readonly pending: number[];
  /** Peers holding a lease (docs/header.md), with the lease word; [] without lease words. */
  readonly leases: { id: number; lease: number }[];
}

export interface ChannelSnapshot {
  readonly offset: number;
  readonly producer: number;
  readonly consumer: number;
  readonly capacity: number;
  /** Bytes published and not yet consumed (head - tail). */
  readonly used: number;
  readonly closed: boolean;
  /** The producer waits for space. */
  readonly waiting: boolean;
}

export interface RegionSnapshot {
  readonly size: number;
  /** The bitmask header, null without one. */
  readonly header: HeaderSnapshot | null;
  /** Why a header that is there could not be read (e.g. inconsistent), or null. */
  readonly headerError: string | null;
  readonly channels: ChannelSnapshot[];
  /** Bytes searched for channels, from the data offset (the scan stops at `scanLimit`). */
  readonly scanned: number;
}

/** The default bytes searched for channels: 64 MiB (a 64-byte step: 10^6 words looked at). */
export const DEFAULT_SCAN_LIMIT = 64 * 2 ** 20;

export function inspectRegion(buffer: ArrayBuffer, options: { size?: number; scanLimit?: number } = {}): RegionSnapshot {
  let header: HeaderSnapshot | null = null;
  let headerError: string | null = null;
  try {
    const layout = readHeader(buffer);
    const ids = (offset: number): number[] => new BitWords(buffer, offset, layout.words).ids();
    const leases: { id: number; lease: number }[] = [];
    if (layout.leaseOffset !== 0) {
      const words = new Uint32Array(buffer, layout.leaseOffset, layout.maxPeers);
      for (let id = 0; id < words.length; id++) {
        const lease = Atomics.load(words, id);
        if (lease !== 0) leases.push({ id, lease });
      }
    }
    header = { maxPeers: layout.maxPeers, dataOffset: layout.dataOffset, live: ids(layout.liveOffset), pending: ids(layout.pendingOffset), leases };
  } catch (error) {
    // No header at all is normal (a plain server); a broken one is worth saying.
    if (!(error instanceof HeaderError) || !/no bitmask header/.test(error.message)) headerError = (error as Error).message;
  }
  const start = header?.dataOffset ?? 0;
  const end = Math.min(buffer.byteLength, start + (options.scanLimit ?? DEFAULT_SCAN_LIMIT));
  const channels: ChannelSnapshot[] = [];
  const words = new Uint32Array(buffer, 0, Math.floor(buffer.byteLength / 4));
  for (let offset = start; offset + 64 <= end; ) {
    if (Atomics.load(words, offset / 4) !== CHANNEL_MAGIC) {
      offset += 64;
      continue;
    }
    let info;
    try {
      info = readChannelHeader(buffer, offset);
    } catch {
      offset += 64; // the magic by chance in someone's data
      continue;
    }
    const at = (w: number): number => Atomics.load(words, offset / 4 + w);
    const head = at(Word.head);
    const tail = at(Word.tail);
    channels.push({
      offset,
      producer: info.producer,
      consumer: info.consumer,
      capacity: info.capacity,
      used: (head - tail) >>> 0,
      closed: at(Word.closed) !== 0,
      waiting: at(Word.waiting) !== 0,
    });
    offset += Math.ceil(channelBytes(info.capacity) / 64) * 64;
  }
  return { size: options.size ?? buffer.byteLength, header, headerError, channels, scanned: Math.max(0, end - start) };
}
