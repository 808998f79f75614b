/**
 * PeerServer + Peers across processes: a server in the test process and peer children
 * (test/fixtures/network/peer-child.mjs) that join, see each other, ring each other on every
 * vector, share memory, leave and rejoin. Then the Peer API in-process: the interrupts()
 * iterator, server-lost, and ring() argument errors.
 *
 * No timing assertions: every wait is event-driven with a generous timeout.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Peer, PeerServer } from '../../lib/index.js';
import { killAllChildren } from '../helpers/children.js';
import { uniqueSocketPath } from '../helpers/paths.js';
import { EventRecorder, waitFor, within } from '../helpers/wait.js';
import { PeerChild } from './child.js';

const VECTORS = 3;

const servers: PeerServer[] = [];
const peers: Peer[] = [];

function listen(tag: string, options: Parameters<typeof PeerServer.listen>[0] = {}): PeerServer {
  const server = PeerServer.listen({ socketPath: uniqueSocketPath(tag), ...options });
  servers.push(server);
  return server;
}

async function connect(server: PeerServer, options: Parameters<typeof Peer.connect>[1] = {}): Promise<Peer> {
  const peer = await Peer.connect(server.socketPath, { vectors: server.vectors, timeout: 20_000, ...options });
  peers.push(peer);
  return peer;
}

afterEach(async () => {
  // Servers first: killing several children at once while the server still serves them makes
  // it send leave notices to children that die before reading them (see faults.test.ts).
  for (const s of servers.splice(0)) s.close();
  for (const p of peers.splice(0)) p.close();
  await killAllChildren();
});

/** Times sender `s` (index in the group) rings each other peer on vector `v`: distinct per cell. */
const timesFor = (s: number, v: number): number => 1 + s + 4 * v;

describe('four peer processes around one PeerServer', () => {
  it('join, see each other, ring on every vector, share memory, leave, and a newcomer gets a fresh ID', { timeout: 180_000 }, async () => {
    const server = listen('mp', { vectors: VECTORS });
    const serverEvents = new EventRecorder(server, ['peer-joined', 'peer-left']);

    // --- join: one after another, so the IDs are 0, 1, 2, 3 in order.
    const group: PeerChild[] = [];
    for (let i = 0; i < 4; i++) {
      const child = await PeerChild.start(server.socketPath, { vectors: VECTORS, name: `peer child #${i}` });
      group.push(child);
      expect(child.ready!.vectors).toBe(VECTORS);
      expect(child.ready!.shmSize).toBe(server.size);
      // Whoever was there before is listed at connect, in connect order.
      expect((child.ready!.peers as { id: number }[]).map((p) => p.id)).toEqual(group.slice(0, i).map((c) => c.id));
    }
    const ids = group.map((c) => c.id);
    expect(ids).toEqual([0, 1, 2, 3]);

    // The server announced each of them exactly once.
    await waitFor(() => serverEvents.all('peer-joined').length === 4, 'four server peer-joined events');
    expect(serverEvents.all('peer-joined').map(([p]) => p)).toEqual(ids.map((id) => ({ id, vectors: VECTORS })));
    expect(server.peers()).toEqual(ids.map((id) => ({ id, vectors: VECTORS })));

    // Each child sees every later one join (earlier ones were in its 'ready' list) ...
    for (const [i, child] of group.entries()) {
      for (const later of group.slice(i + 1)) await child.waitForJoin(later.id);
      expect(child.knownPeers()).toEqual(ids.filter((id) => id !== child.id));
      // ... exactly once each, and nothing left.
      const joins = child.messages.filter((m) => m.type === 'peer-joined').map((m) => m.id);
      expect(joins).toEqual(group.slice(i + 1).map((c) => c.id));
      expect(child.messages.filter((m) => m.type === 'peer-left')).toEqual([]);
    }
    // ... and holds every vector of every other peer.
    for (const child of group) {
      const others = ids.filter((id) => id !== child.id).map((id) => ({ id, vectors: VECTORS }));
      const seen = await waitFor(async () => {
        const list = await child.peers();
        return list.length === others.length && list.every((p) => p.vectors === VECTORS) ? list : null;
      }, `${child.name} to hold all vectors of the others`);
      expect([...seen].sort((a, b) => a.id - b.id)).toEqual(others);
    }

    // --- interrupts: every peer rings every other on every vector (distinct counts per cell).
    const expected = group.map((receiver) =>
      Array.from({ length: VECTORS }, (_, v) =>
        group.reduce((sum, sender, s) => (sender === receiver ? sum : sum + timesFor(s, v)), 0),
      ),
    );
    const rung = await Promise.all(
      group.map((sender, s) =>
        sender.ring(
          group
            .filter((r) => r !== sender)
            .flatMap((r) => Array.from({ length: VECTORS }, (_, v) => ({ peer: r.id, vector: v, times: timesFor(s, v) }))),
        ),
      ),
    );
    expect(rung.reduce((a, b) => a + b, 0)).toBe(expected.flat().reduce((a, b) => a + b, 0));
    const totals = (): number[][] => group.map((c) => c.interruptTotals(VECTORS));
    const sum = (m: number[][]): number => m.flat().reduce((a, b) => a + b, 0);
    // Wait for the grand total, then compare the full (receiver × vector) matrix.
    await waitFor(() => sum(totals()) >= sum(expected), () => `all interrupts (have ${JSON.stringify(totals())}, want ${JSON.stringify(expected)})`);
    expect(totals()).toEqual(expected);
    // The children's own counters agree (read after a round trip: no late strays either).
    expect(await Promise.all(group.map((c) => c.stats(VECTORS)))).toEqual(expected);
    // A ring to oneself is legal and lands on one's own vector.
    await group[2]!.ring([{ peer: group[2]!.id, vector: 1 }]);
    await waitFor(() => group[2]!.interruptTotals(VECTORS)[1] === expected[2]![1]! + 1, 'the self-ring');
    expect(totals()).toEqual(expected.map((row, r) => (r === 2 ? row.map((n, v) => (v === 1 ? n + 1 : n)) : row)));

    // --- shared memory: each writes its own slot; all read all slots (and so does the server).
    const SLOT = 256;
    const BASE = 4096;
    const text = (id: number): Buffer => Buffer.from(`slot of peer ${id} (pid ${group[id]!.pid}) ${'#'.repeat(id * 7)}`.padEnd(SLOT, '.'));
    await Promise.all(group.map((c) => c.write(BASE + c.id * SLOT, text(c.id))));
    const wanted = Buffer.concat(ids.map(text));
    for (const reader of group) {
      expect((await reader.read(BASE, ids.length * SLOT)).equals(wanted), `${reader.name} reads all slots`).toBe(true);
    }
    expect(Buffer.from(server.shm.bytes(BASE, ids.length * SLOT)).equals(wanted)).toBe(true);

    // --- one quits: the three others and the server see it leave.
    const leaver = group[1]!;
    await leaver.quit();
    const [left, reason] = await serverEvents.waitFor('peer-left', (p: { id: number }) => p.id === leaver.id, 'server peer-left');
    expect(left).toEqual({ id: leaver.id, vectors: VECTORS });
    expect(reason).toBe('disconnected');
    const stayers = group.filter((c) => c !== leaver);
    for (const c of stayers) {
      await c.waitForLeave(leaver.id);
      expect(c.knownPeers()).toEqual(ids.filter((id) => id !== c.id && id !== leaver.id));
      expect((await c.peers()).map((p) => p.id).sort()).toEqual(ids.filter((id) => id !== c.id && id !== leaver.id));
    }
    expect(server.peers().map((p) => p.id)).toEqual([0, 2, 3]);
    // Ringing the departed peer is now an error in the others (it is unknown).
    await expect(stayers[0]!.ring([{ peer: leaver.id, vector: 0 }])).rejects.toMatchObject({ remoteName: 'RangeError' });

    // --- a newcomer gets a NEW id (not the departed 1) and can be rung by all, and ring all.
    const newcomer = await PeerChild.start(server.socketPath, { vectors: VECTORS, name: 'newcomer' });
    expect(newcomer.id).not.toBe(leaver.id);
    expect(ids).not.toContain(newcomer.id);
    expect(newcomer.id).toBe(4);
    expect((newcomer.ready!.peers as { id: number; vectors: number }[]).map((p) => p.id)).toEqual([0, 2, 3]);
    await serverEvents.waitFor('peer-joined', (p: { id: number }) => p.id === newcomer.id);
    for (const c of stayers) await c.waitForJoin(newcomer.id);
    await waitFor(async () => (await Promise.all(stayers.map((c) => c.peers()))).every((l) => l.some((p) => p.id === newcomer.id && p.vectors === VECTORS)), 'all vectors of the newcomer');

    const before = stayers.map((c) => c.interruptTotals(VECTORS));
    await Promise.all(stayers.map((c) => c.ring(Array.from({ length: VECTORS }, (_, v) => ({ peer: newcomer.id, vector: v, times: v + 1 })))));
    await newcomer.ring(stayers.map((c) => ({ peer: c.id, vector: 2 })));
    const newcomerExpected = Array.from({ length: VECTORS }, (_, v) => stayers.length * (v + 1));
    await waitFor(() => sum([newcomer.interruptTotals(VECTORS)]) >= sum([newcomerExpected]), 'the newcomer to be rung');
    expect(newcomer.interruptTotals(VECTORS)).toEqual(newcomerExpected);
    for (const [i, c] of stayers.entries()) {
      await waitFor(() => c.interruptTotals(VECTORS)[2] === before[i]![2]! + 1, `${c.name} to be rung by the newcomer`);
      expect(c.interruptTotals(VECTORS)).toEqual(before[i]!.map((n, v) => (v === 2 ? n + 1 : n)));
    }
    // The leaver's slot in shm is still there for the newcomer to read (shm outlives peers).
    expect((await newcomer.read(BASE, ids.length * SLOT)).equals(wanted)).toBe(true);
    serverEvents.stop();
  });
});

describe('Peer API in-process', () => {
  it('interrupts() yields { vector, count } as they arrive, filters by vector, and ends on close', async () => {
    const server = listen('iter', { vectors: VECTORS });
    const a = await connect(server);
    const b = await connect(server);
    await waitFor(() => b.vectorsOf(a.id) === VECTORS && a.vectorsOf(b.id) === VECTORS, 'both peers to know each other');

    const all: { vector: number; count: number }[] = [];
    const onlyTwo: { vector: number; count: number }[] = [];
    // for-await calls next() synchronously, so the iterators listen before the first ring.
    const consumeAll = (async () => {
      for await (const i of a.interrupts()) all.push(i);
      return 'ended';
    })();
    const consumeTwo = (async () => {
      for await (const i of a.interrupts(2)) onlyTwo.push(i);
      return 'ended';
    })();

    const total = (list: { vector: number; count: number }[], v?: number): number =>
      list.filter((i) => v === undefined || i.vector === v).reduce((s, i) => s + i.count, 0);
    b.ring(a.id, 0);
    await waitFor(() => total(all, 0) === 1, 'vector 0');
    b.ring(a.id, 2);
    b.ring(a.id, 2);
    await waitFor(() => total(all, 2) === 2, 'vector 2 twice');
    b.ring(a.id, 1);
    await waitFor(() => total(all, 1) === 1, 'vector 1');
    expect(all.every((i) => Number.isInteger(i.count) && i.count >= 1)).toBe(true);
    expect([total(all, 0), total(all, 1), total(all, 2)]).toEqual([1, 1, 2]);
    expect(onlyTwo.every((i) => i.vector === 2)).toBe(true);
    expect(total(onlyTwo)).toBe(2);

    a.close();
    expect(await within(consumeAll, 'interrupts() to end on close')).toBe('ended');
    expect(await within(consumeTwo, 'interrupts(2) to end on close')).toBe('ended');
    // b hears a leave.
    await waitFor(() => b.vectorsOf(a.id) === 0, 'b to forget a');
  });

  it("emits 'server-lost' after server.close(); known peers can still be rung", async () => {
    const server = listen('lost', { vectors: VECTORS });
    const a = await connect(server);
    const b = await connect(server);
    await waitFor(() => a.vectorsOf(b.id) === VECTORS && b.vectorsOf(a.id) === VECTORS, 'both peers to know each other');
    const aEvents = new EventRecorder(a, ['server-lost', 'peer-left', 'interrupt']);
    const bEvents = new EventRecorder(b, ['server-lost', 'peer-left', 'interrupt']);

    server.close();
    const [errorA] = await aEvents.waitFor('server-lost');
    const [errorB] = await bEvents.waitFor('server-lost');
    expect(errorA).toBeNull(); // a clean EOF after the handshake is not an error
    expect(errorB).toBeNull();
    expect(a.serverLost).toBe(true);
    expect(b.serverLost).toBe(true);
    // The server closing is not a peer leaving: the peers keep what they have.
    expect(aEvents.all('peer-left')).toEqual([]);
    expect(a.peers()).toEqual([{ id: b.id, vectors: VECTORS }]);

    a.ring(b.id, 1);
    const [vector, count] = await bEvents.waitFor('interrupt');
    expect(vector).toBe(1);
    expect(count).toBe(1);
    b.ring(a.id, 2);
    expect((await aEvents.waitFor('interrupt'))[0]).toBe(2);
    expect(bEvents.all('interrupt')).toEqual([[1, 1]]);
    expect(aEvents.all('interrupt')).toEqual([[2, 1]]);
    expect(aEvents.all('server-lost')).toHaveLength(1);
  });

  it('ring() of an unknown peer or vector is a RangeError', async () => {
    const server = listen('range', { vectors: VECTORS });
    const a = await connect(server);
    const b = await connect(server);
    await waitFor(() => a.vectorsOf(b.id) === VECTORS, 'a to know b');

    expect(() => a.ring(42, 0)).toThrow(RangeError); // nobody has ID 42
    expect(() => a.ring(b.id, VECTORS)).toThrow(RangeError); // b has vectors 0..2
    expect(() => a.ring(a.id, VECTORS)).toThrow(RangeError); // nor has a itself
    expect(() => a.ring(b.id, 65536)).toThrow(RangeError);
    expect(() => a.ring(-1, 0)).toThrow(RangeError);
    expect(() => a.ring(65536, 0)).toThrow(RangeError);
    expect(() => a.ring(b.id, 0.5)).toThrow(RangeError);
    expect(a.vectorsOf(42)).toBe(0);
    // The valid ones work; a peer that left becomes unknown.
    const bEvents = new EventRecorder(b, ['interrupt']);
    a.ring(b.id, VECTORS - 1);
    expect((await bEvents.waitFor('interrupt'))[0]).toBe(VECTORS - 1);
    const gone = b.id;
    b.close();
    await waitFor(() => a.vectorsOf(gone) === 0, 'a to hear b leave');
    expect(() => a.ring(gone, 0)).toThrow(RangeError);
  });
});
