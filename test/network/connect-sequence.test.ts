/**
 * When a Peer's connect sequence is complete without `vectors`: the protocol has no end mark,
 * and a server can be stopped between two messages. A first peer waits for a quiet socket
 * after its own vectors; a peer with others to compare with is done once it has as many as
 * they have; vectors after that are still added. The servers here pace their sequences.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Peer } from '../../lib/index.js';
import { waitFor } from '../helpers/wait.js';
import { pacedServer, sparseMemfd, type PacedPart } from './hostile-server.js';

const cleanups: (() => void)[] = [];

afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

async function connect(self: number, parts: PacedPart[]): Promise<Peer> {
  const server = pacedServer(sparseMemfd(65536), self, parts);
  cleanups.push(server.close);
  const peer = await Peer.connect(server.socketPath);
  cleanups.push(() => peer.close());
  return peer;
}

describe('Peer.connect without vectors', () => {
  it('a first peer whose own vectors come 20 ms apart has all of them', async () => {
    const peer = await connect(0, [
      { afterMs: 0, peer: 0, count: 1 },
      { afterMs: 20, peer: 0, count: 1 },
      { afterMs: 20, peer: 0, count: 1 },
    ]);
    expect([peer.id, peer.vectors, peer.peers()]).toEqual([0, 3, []]);
  });

  it('with other peers: done at as many own vectors as theirs, a later one still added', async () => {
    const peer = await connect(2, [
      { afterMs: 0, peer: 0, count: 2 },
      { afterMs: 0, peer: 1, count: 2 },
      { afterMs: 0, peer: 2, count: 2 },
      { afterMs: 500, peer: 2, count: 1 },
    ]);
    expect([peer.vectors, peer.peers()]).toEqual([2, [{ id: 0, vectors: 2 }, { id: 1, vectors: 2 }]]);
    await waitFor(() => peer.vectors === 3, 'the third own vector');
  });

  it('others with more vectors than ours so far: it waits for ours as for a first peer', async () => {
    const peer = await connect(1, [
      { afterMs: 0, peer: 0, count: 2 },
      { afterMs: 0, peer: 1, count: 1 },
      { afterMs: 20, peer: 1, count: 1 },
    ]);
    expect([peer.vectors, peer.peers()]).toEqual([2, [{ id: 0, vectors: 2 }]]);
  });

  it('a first peer whose next vector comes long after is connected without it, and gets it later', async () => {
    const peer = await connect(0, [
      { afterMs: 0, peer: 0, count: 1 },
      { afterMs: 1000, peer: 0, count: 1 },
    ]);
    expect(peer.vectors).toBe(1);
    await waitFor(() => peer.vectors === 2, 'the late own vector');
  });
});
