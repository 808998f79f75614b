/**
 * Helpers of the doorbell suites: their resources (servers, peers, devices) closed in afterEach
 * once the children have left, knowing peers, direct views of the bitmask header in the
 * server's shared memory, and strace. Children run fixtures in test/fixtures/doorbell/.
 */
import { afterEach } from 'vitest';
import type { HeaderLayout, Peer } from '../../lib/index.js';
import { killAllChildren } from '../helpers/children.js';
import { findOnPath, isCi } from '../helpers/env.js';
import { Resources } from '../helpers/resources.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The servers, peers and devices of each test, closed in afterEach after its children have
 * left: each is asked to (stdin EOF: every fixture closes and exits), SIGKILLed after 2 s.
 */
export function useResources(): Resources {
  const res = new Resources();
  afterEach(async () => {
    await killAllChildren({ graceMs: 2000 });
    res.closeAll();
  });
  return res;
}

/** Waits until `peer` knows every ID in `ids` (peer-joined seen), so it can ring them. */
export async function knowsAll(peer: Peer, ids: readonly number[]): Promise<void> {
  await waitFor(
    () => ids.every((id) => id === peer.id || peer.vectorsOf(id) > 0),
    () => `peer ${peer.id} to know peers ${ids.join(', ')} (knows ${peer.peers().map((p) => p.id).join(', ')})`,
  );
}

// ---------------------------------------------------------------------------------------------
// Direct views of the bitmask header in the server's shared memory

const bitOf = (id: number): bigint => 1n << BigInt(id & 63);

function word(buffer: ArrayBuffer, offset: number, id: number): bigint {
  return BigInt.asUintN(64, Atomics.load(new BigInt64Array(buffer, offset, 1 + (id >> 6)), id >> 6));
}

export function pendingBit(buffer: ArrayBuffer, layout: HeaderLayout, id: number): boolean {
  return (word(buffer, layout.pendingOffset, id) & bitOf(id)) !== 0n;
}

export function liveBit(buffer: ArrayBuffer, layout: HeaderLayout, id: number): boolean {
  return (word(buffer, layout.liveOffset, id) & bitOf(id)) !== 0n;
}

/** The IDs whose bits are set in one bit set of the header. */
export function bitIds(buffer: ArrayBuffer, layout: HeaderLayout, which: 'pending' | 'live'): number[] {
  const words = new BigInt64Array(buffer, which === 'pending' ? layout.pendingOffset : layout.liveOffset, layout.words);
  const out: number[] = [];
  for (let w = 0; w < layout.words; w++) {
    const value = BigInt.asUintN(64, Atomics.load(words, w));
    for (let b = 0; b < 64; b++) if ((value >> BigInt(b)) & 1n) out.push(w * 64 + b);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// strace: required in CI, skipped (with a message) elsewhere when missing

export const STRACE_MISSING_MESSAGE = 'strace not found on PATH: syscall-count test skipped. Install with `apt-get install -y strace`.';

/** Path of strace, or null (skip) when absent; in CI (`CI` set and not ''/0/false/no) absent throws. */
export function requireStraceOrSkip(): string | null {
  const strace = findOnPath('strace');
  if (strace !== null) return strace;
  if (isCi()) throw new Error(`strace is required in CI (CI=${process.env.CI}): not found on PATH. Install with \`apt-get install -y strace\`.`);
  return null;
}
