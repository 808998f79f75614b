/** One receive loop per peer, and a loop that wakes for a stray pending bit. */
import { afterEach, describe, expect, it } from 'vitest';
import { BitmaskDoorbell, isInUseError } from '../../lib/index.js';
import { closeTracked, track, twoPeers } from '../helpers/network.js';

afterEach(closeTracked);

describe('bitmask receive loops', () => {
  it('a second receive loop on the same peer is refused (InUseError); after the first ends, one may start', async () => {
    const { b } = await twoPeers({ bitmask: true });
    const first = track(new BitmaskDoorbell(b));
    const second = track(new BitmaskDoorbell(b));
    const stop = new AbortController();
    const serving = first.serve(() => false, () => undefined, { signal: stop.signal });
    await new Promise((r) => setImmediate(r));
    const other = second.notifications(() => false);
    await expect(other.next()).rejects.toSatisfy(isInUseError);
    stop.abort();
    await serving;
    const again = new AbortController();
    const later = second.serve(() => false, () => undefined, { signal: again.signal });
    again.abort();
    await expect(later).resolves.toBeUndefined();
  });
});

describe('a stray pending bit', () => {
  it('a sleeping receiver whose bit was set without a signal (a sender that missed a leave) still wakes', async () => {
    const { b } = await twoPeers({ bitmask: true });
    const receiver = track(new BitmaskDoorbell(b));
    const work = new Int32Array(b.shm.buffer, b.header.dataOffset, 2); // [published, consumed]
    const stop = new AbortController();
    const serving = receiver.serve(
      () => Atomics.load(work, 0) !== Atomics.load(work, 1),
      () => {
        Atomics.add(work, 1, 1);
      },
      { signal: stop.signal },
    );
    await new Promise((r) => setTimeout(r, 50)); // asleep, bit clear
    expect(receiver.pending()).toBe(false);
    // What a stale sender does: publish, set the bit, and write an eventfd nobody reads.
    Atomics.add(work, 0, 1);
    Atomics.or(new Int32Array(b.shm.buffer, b.header.pendingOffset, 2), b.id >> 5, 1 << (b.id & 31));
    const deadline = Date.now() + 10_000;
    while (Atomics.load(work, 1) !== 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(Atomics.load(work, 1)).toBe(1);
    stop.abort();
    await serving;
  });
});
