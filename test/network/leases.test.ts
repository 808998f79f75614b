/**
 * Leases (docs/header.md): in bitmask mode a peer whose connection the server cannot watch for
 * the death of its program (a VM: QEMU stays connected) renews a lease word; the server takes a
 * lease that stands still, or is cleared, as that peer leaving, and a renewed one as its return.
 * Here the lease-holder is a host Peer renewing its word by hand, as a GuestDevice does.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LeaseWords } from '../../lib/protocol/header.js';
import { lowBuffer } from '../../lib/sys/shared-memory.js';
import type { Peer, PeerServer } from '../../lib/index.js';
import { Resources } from '../helpers/resources.js';
import { EventRecorder, next, sleep, waitFor } from '../helpers/wait.js';

const res = new Resources();
afterEach(() => res.closeAll());

/** Renews `peer`'s lease every 50 ms until stopped. */
function holdLease(peer: Peer): { stop(): void; release(): void } {
  const leases = new LeaseWords(lowBuffer(peer.shm), peer.header);
  leases.renew(peer.id);
  const timer = setInterval(() => leases.renew(peer.id), 50);
  return {
    stop: () => clearInterval(timer),
    release: () => {
      clearInterval(timer);
      leases.clear(peer.id);
    },
  };
}

async function network(leaseTimeout: number): Promise<{ server: PeerServer; a: Peer; b: Peer }> {
  const server = res.listen('lease', { bitmask: true, vectors: 2, leaseTimeout });
  const a = await res.connect(server, { bitmask: true });
  const b = await res.connect(server, { bitmask: true });
  await a.waitForPeer(b.id);
  return { server, a, b };
}

describe('leases', () => {
  it('the header has one lease word per peer, between the bit words and the data', () => {
    const server = res.listen('lease-layout', { bitmask: true, maxPeers: 64 });
    expect(server.header).toMatchObject({ pendingOffset: 64, liveOffset: 128, leaseOffset: 192, dataOffset: 4096 });
    const big = res.listen('lease-layout-big', { bitmask: true, maxPeers: 4096 });
    expect(big.header!.leaseOffset + 4096 * 4).toBeLessThanOrEqual(big.header!.dataOffset);
    expect(big.header!.dataOffset % 4096).toBe(0);
  });

  it('a lease that stands still is a leave (lease-expired) while the connection stays; renewed, a join again that can be rung', async () => {
    const { server, a, b } = await network(300);
    const serverEvents = new EventRecorder(server, ['peer-left', 'peer-joined']);
    const lease = holdLease(b);
    await sleep(500); // renewed: nothing happens
    expect(a.vectorsOf(b.id)).toBe(2);
    expect(serverEvents.log).toEqual([]);

    const t0 = performance.now();
    const left = next<[number]>(a, 'peer-left', 'peer A to hear that B left');
    lease.stop();
    expect(await left).toEqual([b.id]);
    const after = performance.now() - t0;
    expect(after).toBeGreaterThanOrEqual(250);
    expect(serverEvents.log).toEqual([{ event: 'peer-left', args: [{ id: b.id, vectors: 2 }, 'lease-expired'] }]);
    expect(a.vectorsOf(b.id)).toBe(0);
    expect(server.peers().map((p) => p.id)).toEqual([a.id]);
    expect(b.serverLost).toBe(false); // still connected
    expect(b.peers().map((p) => p.id)).toEqual([a.id]); // and still told of the others

    const joined = next<[number]>(a, 'peer-joined', 'peer A to hear that B is back');
    const lease2 = holdLease(b);
    expect(await joined).toEqual([b.id]);
    expect(a.vectorsOf(b.id)).toBe(2);
    const rung = next<[number, number]>(b, 'interrupt', 'B to be rung on vector 1');
    a.ring(b.id, 1);
    expect((await rung)[0]).toBe(1);

    const released = next<[number]>(a, 'peer-left', 'peer A to hear that B released its lease');
    lease2.release();
    expect(await released).toEqual([b.id]);
    expect(serverEvents.log.at(-1)).toEqual({ event: 'peer-left', args: [{ id: b.id, vectors: 2 }, 'lease-released'] });
  });

  it('a newcomer is not told of a peer whose lease is gone, and is told when it comes back; a dormant peer that disconnects leaves only once', async () => {
    const { server, a, b } = await network(200);
    const lease = holdLease(b);
    await sleep(150);
    lease.stop();
    await waitFor(() => a.vectorsOf(b.id) === 0, 'B to be taken as gone');
    const c = await res.connect(server, { bitmask: true });
    await c.waitForPeer(a.id);
    expect(c.vectorsOf(b.id)).toBe(0);
    await b.waitForPeer(c.id); // B still learns of newcomers

    const back = next<[number]>(c, 'peer-joined', 'C to hear of B');
    const lease2 = holdLease(b);
    expect(await back).toEqual([b.id]);
    lease2.stop();
    await waitFor(() => c.vectorsOf(b.id) === 0 && a.vectorsOf(b.id) === 0, 'B to expire again');

    const serverLeft = new EventRecorder(server, ['peer-left']);
    const aLeft = new EventRecorder(a, ['peer-left']);
    b.close();
    await waitFor(() => server.peers().length === 2 && !server.peers().some((p) => p.id === b.id), 'the server to see B disconnect');
    await sleep(200);
    expect(serverLeft.log).toEqual([]);
    expect(aLeft.log).toEqual([]);
    expect(server.peers().map((p) => p.id)).toEqual([a.id, c.id]);
  });

  it('leaseTimeout 0 turns leases off', async () => {
    const { server, a, b } = await network(0);
    const lease = holdLease(b);
    await sleep(100);
    lease.release();
    await sleep(400);
    expect(a.vectorsOf(b.id)).toBe(2);
    expect(server.peers()).toHaveLength(2);
    expect(() => res.listen('lease-bad', { bitmask: true, leaseTimeout: 50 })).toThrow(RangeError);
  });
});
