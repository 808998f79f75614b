/**
 * A bitmask peer that dies with its pending bit set must not leave the others stuck: the
 * server clears its live and pending bits, its ID is forgotten by the others (broadcasts do
 * not count it), newcomers can be rung, and an ID reused later starts clear.
 *
 * Then the server's own robustness when peers vanish at awkward moments (with the connect
 * sequence unread; while another peer joins). Those servers run in a child process, so that
 * a crash shows up as a failed assertion instead of an uncaught error in the test process.
 */
import { describe, expect, it } from 'vitest';
import { BitmaskDoorbell, Peer, type PeerServer } from '../../lib/index.js';
import { UnixSocket } from '../../lib/sys/index.js';
import { readHeader } from '../../lib/protocol/index.js';
import { JsonChild, startServerChild } from '../helpers/children.js';
import { Tally, next, settle, waitFor } from '../helpers/wait.js';
import { bitIds, knowsAll, liveBit, pendingBit, useResources } from './helpers.js';

const res = useResources();

/** A bitmask peer in a child (test/fixtures/doorbell/bitmask-peer.mjs), connected once this resolves. */
function bitmaskChild(server: PeerServer | string, name: string, serve = false): Promise<JsonChild> {
  const socketPath = typeof server === 'string' ? server : server.socketPath;
  return JsonChild.fixture('doorbell/bitmask-peer.mjs', { socketPath, serve }, name).whenReady();
}

describe('a bitmask peer SIGKILLed while its pending bit is set', () => {
  it('the server clears its bits; the others can ring newcomers and do not count the dead', { timeout: 120_000 }, async () => {
    const server = res.listen('kill', { size: 64 * 1024, bitmask: true });
    const a = await res.connect(server, { bitmask: true });
    const b = await res.connect(server, { bitmask: true });
    const dbA = res.track(new BitmaskDoorbell(a));
    const dbB = res.track(new BitmaskDoorbell(b));
    const victim = await bitmaskChild(server, 'victim (never acks)');
    const k = victim.id;
    await knowsAll(a, [b.id, k]);
    await knowsAll(b, [a.id, k]);

    // a rings the victim: the edge. The victim drains its eventfd but never clears its bit.
    expect(dbA.ring(k)).toBe(true);
    await victim.waitFor((m) => m.type === 'interrupt', 'the victim to be interrupted');
    const buffer = server.shm.buffer;
    const layout = readHeader(buffer);
    expect(pendingBit(buffer, layout, k)).toBe(true);
    expect(liveBit(buffer, layout, k)).toBe(true);
    expect(dbB.ring(k)).toBe(false); // busy: suppressed
    expect((await victim.request({ cmd: 'state' })).pending).toBe(true);

    const leftAtServer = new Promise<void>((resolve) => server.on('peer-left', (p) => p.id === k && resolve()));
    const leftA = next(a, 'peer-left', 'a to see the victim leave');
    const leftB = next(b, 'peer-left', 'b to see the victim leave');
    await victim.kill('SIGKILL');
    await Promise.all([leftAtServer, leftA, leftB]);

    // The header is intact; the dead peer's live and pending bits are clear.
    expect(readHeader(buffer)).toEqual(layout);
    expect(liveBit(buffer, layout, k)).toBe(false);
    expect(pendingBit(buffer, layout, k)).toBe(false);
    expect(bitIds(buffer, layout, 'live')).toEqual([a.id, b.id].sort((x, y) => x - y));
    expect(bitIds(buffer, layout, 'pending')).toEqual([]);
    expect(() => dbA.ring(k)).toThrow(RangeError);

    // A newcomer (fresh ID) can be rung and receives.
    const newcomer = await bitmaskChild(server, 'newcomer', true);
    expect(newcomer.id).not.toBe(k);
    await knowsAll(a, [newcomer.id]);
    await knowsAll(b, [newcomer.id]);
    const slots = new Int32Array(buffer, layout.dataOffset, layout.maxPeers);
    Atomics.add(slots, newcomer.id, 1);
    expect(dbA.ring(newcomer.id)).toBe(true);
    await newcomer.waitFor((m) => m.type === 'consumed' && m.total === 1, 'the newcomer to consume the message');
    await waitFor(() => !pendingBit(buffer, layout, newcomer.id), 'the newcomer to clear its bit');

    // Broadcast from b: a and the newcomer, never the dead peer.
    b.resetCounters();
    const tallyA = new Tally(a, 'interrupt');
    const gotA = next(a, 'interrupt', 'a to get the broadcast');
    expect(dbB.broadcast()).toBe(2);
    await gotA;
    await newcomer.waitFor((m) => m.type === 'interrupt' && newcomer.messages.filter((x) => x.type === 'interrupt').length >= 2, 'the newcomer to get the broadcast');
    const cb = b.counters();
    expect(cb.rings).toBe(2);
    expect(cb.signals).toBe(2);
    expect(cb.eventfdWrites).toBe(2);
    expect(pendingBit(buffer, layout, k)).toBe(false);
    expect(liveBit(buffer, layout, k)).toBe(false);

    // And from the newcomer's side: it knows a and b only; its broadcast addresses exactly them.
    const state = await newcomer.request({ cmd: 'state' });
    expect([...(state.peers as number[])].sort((x, y) => x - y)).toEqual([a.id, b.id].sort((x, y) => x - y));
    const before = state.counters.rings as number;
    await newcomer.request({ cmd: 'broadcast' });
    const after = await newcomer.request({ cmd: 'state' });
    expect((after.counters.rings as number) - before).toBe(2);
    await settle();
    expect(tallyA.count).toBe(1); // a's bit was still set from b's broadcast: suppressed
  });

  it('an ID reused after the IDs wrap starts with its pending bit clear and can be rung', { timeout: 120_000 }, async () => {
    const server = res.listen('reuse', { size: 64 * 1024, bitmask: true, maxPeers: 4 });
    const layout = server.header!;
    expect(layout.maxPeers).toBe(64); // IDs wrap at the header's bit count
    const a = await res.connect(server, { bitmask: true });
    const dbA = res.track(new BitmaskDoorbell(a));
    const victim = await bitmaskChild(server, 'victim (never acks)');
    const k = victim.id;
    await knowsAll(a, [k]);
    expect(dbA.ring(k)).toBe(true);
    await victim.waitFor((m) => m.type === 'interrupt', 'the victim to be interrupted');
    const left = next(a, 'peer-left', 'a to see the victim leave');
    await victim.kill('SIGKILL');
    await left;

    // Churn through the other IDs until the next one is k again.
    for (let i = 0; i < layout.maxPeers - 2; i++) {
      const p = await Peer.connect(server.socketPath, { bitmask: true, timeout: 20_000 });
      expect(p.id).not.toBe(k);
      p.close();
    }
    const heir = await bitmaskChild(server, 'heir of the ID', true);
    expect(heir.id).toBe(k);
    await knowsAll(a, [k]);
    expect(pendingBit(server.shm.buffer, layout, k)).toBe(false);
    const slots = new Int32Array(server.shm.buffer, layout.dataOffset, layout.maxPeers);
    Atomics.add(slots, k, 1);
    expect(dbA.ring(k)).toBe(true); // not suppressed by a stale bit
    await heir.waitFor((m) => m.type === 'consumed' && m.total === 1, 'the heir to consume');
  });
});

describe('the server when peers vanish at awkward moments', () => {
  it('survives a client that disconnects with the connect sequence unread', async () => {
    const server = await startServerChild({ size: 64 * 1024, bitmask: true }, 'server');
    // A client that never reads: everything the server sends stays in its socket buffer.
    const raw = UnixSocket.connect(server.socketPath);
    await server.waitFor((m) => m.type === 'peer-joined', 'the server to admit the raw client');
    raw.close();
    await server.waitFor((m) => m.type === 'peer-left' || m.type === 'fatal', 'the server to see the client go');
    expect(server.messages.filter((m) => m.type === 'fatal'), server.diagnostics()).toEqual([]);
    expect(server.messages.find((m) => m.type === 'peer-left')).toMatchObject({ reason: 'disconnected' });
    expect((await server.request({ cmd: 'peers' })).peers).toEqual([]);
    expect((await server.request({ cmd: 'bits' })).live).toEqual([]);
    // And it still serves.
    const p = await res.connect(server.socketPath, { bitmask: true });
    expect(p.peers()).toEqual([]);
    expect(server.alive).toBe(true);
  });

  it('a peer leaving while another joins: the server survives and the newcomer gets a consistent sequence', async () => {
    const server = await startServerChild({ size: 64 * 1024, bitmask: true }, 'server');
    const leaver = await res.connect(server.socketPath, { bitmask: true });
    await server.waitFor((m) => m.type === 'peer-joined' && m.id === leaver.id, 'the leaver to be admitted');
    // With the server stopped, the newcomer connects first and then the leaver closes (having
    // read everything): the server finds both ready in one poll, the accept first.
    server.proc.kill('SIGSTOP');
    let newcomer: Peer | Error;
    try {
      const joining = Peer.connect(server.socketPath, { bitmask: true, timeout: 20_000 });
      leaver.close();
      server.proc.kill('SIGCONT');
      newcomer = await joining.then(
        (p) => res.track(p),
        (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
      );
    } finally {
      server.proc.kill('SIGCONT');
    }
    await server.waitFor((m) => (m.type === 'peer-left' && m.id === leaver.id) || m.type === 'fatal', 'the server to drop the leaver');
    await settle();
    const fatal = server.messages.filter((m) => m.type === 'fatal').map((m) => String(m.message).split('\n').slice(0, 6).join('\n'));
    expect({ newcomer: newcomer instanceof Error ? `${newcomer.name}: ${newcomer.message}` : 'connected', fatal }).toEqual({
      newcomer: 'connected',
      fatal: [],
    });
    const p = newcomer as Peer;
    await waitFor(() => p.peers().length === 0, 'the newcomer to see the leaver gone');
    const peers = (await server.request({ cmd: 'peers' })).peers as { id: number }[];
    expect(peers.map((x) => x.id)).toEqual([p.id]);
    expect(server.alive).toBe(true);
  });
});
