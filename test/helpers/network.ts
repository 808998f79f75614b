/**
 * A small live network for tests in this process: a PeerServer and two connected peers that
 * know each other, closed (with anything else tracked) by `closeTracked()` in afterEach.
 */
import { Peer, PeerServer } from '../../lib/index.js';
import { uniqueSocketPath } from './paths.js';

const open: { close(): void }[] = [];

/** Remembers `r` for closeTracked(). */
export function track<T extends { close(): void }>(r: T): T {
  open.push(r);
  return r;
}

/** Closes everything tracked, newest first. */
export function closeTracked(): void {
  for (const r of open.splice(0).reverse()) r.close();
}

/** A server (64 KiB) and two peers that have seen each other join. */
export async function twoPeers(options: { bitmask?: boolean } = {}): Promise<{ server: PeerServer; a: Peer; b: Peer }> {
  const server = track(PeerServer.listen({ socketPath: uniqueSocketPath('net'), size: 1 << 16, ...options }));
  const a = track(await Peer.connect(server.socketPath, { bitmask: options.bitmask === true }));
  const b = track(await Peer.connect(server.socketPath, { bitmask: options.bitmask === true }));
  await a.waitForPeer(b.id);
  await b.waitForPeer(a.id);
  return { server, a, b };
}
