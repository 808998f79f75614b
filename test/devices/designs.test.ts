/**
 * The three doorbell designs, semantics first: each test fails if the design's documented
 * behaviour breaks (docs/doorbells.md, docs/protocol.md).
 * One server and a few Peers in this process; every wait is event-driven with a generous
 * timeout; "nothing happened" is checked after a few event-loop turns and a short wait.
 */
import { describe, expect, it } from 'vitest';
import { BitmaskDoorbell, ErrorCodes, HeaderError, Peer, type PeerServer } from '../../lib/index.js';
import { HEADER_VERSION, readHeader } from '../../lib/protocol/index.js';
import { BitmaskDevice, Legacy2010Device, LEGACY_BROADCAST, QemuDevice } from '../../lib/devices/index.js';
import { startServerChild } from '../helpers/children.js';
import { Tally, next, settle, waitFor } from '../helpers/wait.js';
import { knowsAll, pendingBit, useResources } from '../doorbell/helpers.js';

const res = useResources();

async function group(server: PeerServer, n: number, options: Parameters<typeof Peer.connect>[1] = {}): Promise<Peer[]> {
  const peers: Peer[] = [];
  for (let i = 0; i < n; i++) peers.push(await res.connect(server, options));
  const ids = peers.map((p) => p.id);
  for (const p of peers) await knowsAll(p, ids);
  return peers;
}

// =============================================================================================
describe('legacy2010 (16-bit registers, dest << 8 | value)', () => {
  async function setup(n = 3): Promise<{ server: PeerServer; peers: Peer[]; devs: Legacy2010Device[] }> {
    const server = res.listen('legacy', { size: 64 * 1024 });
    const peers = await group(server, n);
    const devs = peers.map((p) => res.track(new Legacy2010Device(p)));
    return { server, peers, devs };
  }

  it('Doorbell raises the destination interrupt; IntrStatus holds the value and is read-to-clear', async () => {
    const { peers, devs } = await setup();
    const [a, b] = peers as [Peer, Peer, Peer];
    const [da, db, dc] = devs as [Legacy2010Device, Legacy2010Device, Legacy2010Device];
    const ta = new Tally(da, 'interrupt');
    const tc = new Tally(dc, 'interrupt');

    const fired = next(db, 'interrupt', 'the destination interrupt');
    da.writew('Doorbell', (b.id << 8) | 0x5a);
    await fired;
    expect(db.readw('IntrStatus')).toBe(0x5a);
    expect(db.readw('IntrStatus')).toBe(0); // read-to-clear
    expect(db.stats().injections).toBe(1);

    // Again with another value, through the convenience method: a fresh injection.
    const again = next(db, 'interrupt', 'the second interrupt');
    da.ring(b.id, 0xc3);
    await again;
    expect(db.readw('IntrStatus')).toBe(0xc3);
    expect(db.readw('IntrStatus')).toBe(0);

    await settle();
    expect(ta.count).toBe(0);
    expect(tc.count).toBe(0);
    expect(db.stats().injections).toBe(2);
    expect(a.id).not.toBe(b.id);
  });

  it('destination 255 broadcasts the value to every other live peer, not to the sender', async () => {
    const { devs } = await setup(4);
    const [da, ...others] = devs as [Legacy2010Device, ...Legacy2010Device[]];
    const ta = new Tally(da, 'interrupt');
    const fired = others.map((d, i) => next(d, 'interrupt', `broadcast at receiver #${i + 1}`));
    da.writew('Doorbell', (LEGACY_BROADCAST << 8) | 0x33);
    await Promise.all(fired);
    for (const d of others) {
      expect(d.readw('IntrStatus')).toBe(0x33);
      expect(d.readw('IntrStatus')).toBe(0);
      expect(d.stats().injections).toBe(1);
    }
    await settle();
    expect(ta.count).toBe(0);
    expect(da.stats().injections).toBe(0);
    expect(da.readw('IntrStatus')).toBe(0);
    // One Doorbell write (one trap) for the whole broadcast; one eventfd write per receiver.
    expect(da.stats().trapsByRegister.Doorbell).toEqual({ reads: 0, writes: 1 });
    expect(da.stats().eventfdWrites).toBe(others.length);
  });

  it('IntrMask = 0 holds the interrupt; unmasking delivers it', async () => {
    const { peers, devs } = await setup();
    const b = peers[1]!;
    const [da, db] = devs as [Legacy2010Device, Legacy2010Device];
    const tb = new Tally(db, 'interrupt');

    db.writew('IntrMask', 0);
    expect(db.readw('IntrMask')).toBe(0);
    const arrived = next(b, 'interrupt', 'the eventfd at the masked receiver');
    da.ring(b.id, 7);
    await arrived; // the transport delivered it: only the mask holds it now
    await settle();
    expect(tb.count).toBe(0);
    expect(db.stats().injections).toBe(0);

    const delivered = next(db, 'interrupt', 'the held interrupt on unmask');
    db.writew('IntrMask', 0xffff);
    await delivered;
    expect(tb.count).toBe(1);
    expect(db.stats().injections).toBe(1);
    expect(db.readw('IntrStatus')).toBe(7);
    expect(db.readw('IntrStatus')).toBe(0);

    // A value outside the mask is held too; the matching mask bit releases it.
    db.writew('IntrMask', 0x00f0);
    const arrived2 = next(b, 'interrupt', 'the second eventfd');
    da.ring(b.id, 0x0f);
    await arrived2;
    await settle();
    expect(tb.count).toBe(1);
    const delivered2 = next(db, 'interrupt', 'the interrupt released by mask 0x000f');
    db.writew('IntrMask', 0x000f);
    await delivered2;
    expect(db.readw('IntrStatus')).toBe(0x0f);
    expect(db.stats().injections).toBe(2);
  });

  it('IVPosition is the own ID; IVLiveList follows joins and leaves', async () => {
    const { server, peers, devs } = await setup();
    const [a, b, c] = peers as [Peer, Peer, Peer];
    const [da, db, dc] = devs as [Legacy2010Device, Legacy2010Device, Legacy2010Device];
    for (const [i, d] of devs.entries()) expect(d.readw('IVPosition')).toBe(peers[i]!.id);
    const bits = (ids: number[]): number => ids.reduce((m, id) => m | (1 << id), 0);
    expect([a.id, b.id, c.id]).toEqual([0, 1, 2]);
    for (const d of [da, db, dc]) expect(d.readw('IVLiveList')).toBe(bits([0, 1, 2]));

    // c leaves.
    const leftA = next(a, 'peer-left', 'a to see c leave');
    const leftB = next(b, 'peer-left', 'b to see c leave');
    dc.close();
    c.close();
    await Promise.all([leftA, leftB]);
    expect(da.readw('IVLiveList')).toBe(bits([0, 1]));
    expect(db.readw('IVLiveList')).toBe(bits([0, 1]));

    // d joins with a fresh ID (3: IDs are not reused at once).
    const d = await res.connect(server);
    await knowsAll(a, [d.id]);
    await knowsAll(b, [d.id]);
    const dd = res.track(new Legacy2010Device(d));
    expect(d.id).toBe(3);
    for (const dev of [da, db, dd]) expect(dev.readw('IVLiveList')).toBe(bits([0, 1, 3]));
    expect(dd.readw('IVPosition')).toBe(3);
  });

  it('counts traps per register exactly for a scripted sequence (1 + 1/+2 per message)', async () => {
    const { peers, devs } = await setup();
    const b = peers[1]!;
    const [da, db] = devs as [Legacy2010Device, Legacy2010Device];

    // Sender: one Doorbell, one read each of IVPosition and IVLiveList, a write and a read of IntrMask.
    let fired = next(db, 'interrupt');
    da.ring(b.id, 1);
    da.readw('IVPosition');
    da.readw('IVLiveList');
    da.writew('IntrMask', 0x00ff);
    da.readw('IntrMask');
    await fired;
    // Receiver: the handler's status read, a second (empty) read, mask and unmask.
    expect(db.readw('IntrStatus')).toBe(1);
    expect(db.readw('IntrStatus')).toBe(0);
    db.writew('IntrMask', 0);
    db.writew('IntrMask', 0xffff);
    await settle();

    const sa = da.stats();
    expect(sa.design).toBe('legacy2010');
    expect(sa.trapsByRegister).toEqual({
      IntrMask: { reads: 1, writes: 1 },
      IntrStatus: { reads: 0, writes: 0 },
      Doorbell: { reads: 0, writes: 1 },
      IVPosition: { reads: 1, writes: 0 },
      IVLiveList: { reads: 1, writes: 0 },
    });
    expect(sa.traps).toBe(5);
    expect(sa.injections).toBe(0);
    expect(sa.intercepts).toBe(5);
    const sb = db.stats();
    expect(sb.trapsByRegister).toEqual({
      IntrMask: { reads: 0, writes: 2 },
      IntrStatus: { reads: 2, writes: 0 },
      Doorbell: { reads: 0, writes: 0 },
      IVPosition: { reads: 0, writes: 0 },
      IVLiveList: { reads: 0, writes: 0 },
    });
    expect(sb.traps).toBe(4);
    expect(sb.injections).toBe(1);
    expect(sb.intercepts).toBe(5);

    // Per message, with the handler masking while it works: sender 1 trap; receiver 1
    // injection + status read + mask + unmask.
    da.resetStats();
    db.resetStats();
    expect(da.stats().traps).toBe(0);
    expect(db.stats().injections).toBe(0);
    const N = 10;
    for (let i = 1; i <= N; i++) {
      fired = next(db, 'interrupt', `message ${i}`);
      da.ring(b.id, i);
      await fired;
      db.writew('IntrMask', 0);
      expect(db.readw('IntrStatus')).toBe(i);
      db.writew('IntrMask', 0xffff);
    }
    await settle();
    expect(da.stats().traps).toBe(N);
    expect(da.stats().trapsByRegister.Doorbell!.writes).toBe(N);
    expect(db.stats().injections).toBe(N);
    expect(db.stats().traps).toBe(3 * N);
    expect(db.stats().trapsByRegister.IntrStatus).toEqual({ reads: N, writes: 0 });
    expect(db.stats().trapsByRegister.IntrMask).toEqual({ reads: 0, writes: 2 * N });
  });

  it('a peer with ID 255 or more cannot be modelled (RangeError), 254 can', { timeout: 120_000 }, async () => {
    const server = res.listen('legacy-ids', { size: 64 * 1024 });
    // IDs count up and are not reused soon: 254 joins and leaves bring the next ID to 254.
    for (let i = 0; i < 254; i++) {
      const p = await Peer.connect(server.socketPath, { timeout: 20_000 });
      expect(p.id).toBe(i);
      p.close();
    }
    const p254 = await res.connect(server);
    expect(p254.id).toBe(254);
    const d254 = res.track(new Legacy2010Device(p254));
    expect(d254.readw('IVPosition')).toBe(254);
    const p255 = await res.connect(server);
    expect(p255.id).toBe(255);
    expect(() => new Legacy2010Device(p255)).toThrow(RangeError);
    expect(() => new Legacy2010Device(p255)).toThrow(/255/);
    // 254 cannot address 255 either: destination 255 is the broadcast, and it is not delivered to self.
    const t = new Tally(d254, 'interrupt');
    d254.ring(LEGACY_BROADCAST, 9);
    await settle();
    expect(t.count).toBe(0);
  });
});

// =============================================================================================
describe('qemu (ivshmem-doorbell revision 1: 32-bit registers, dest << 16 | vector)', () => {
  const VECTORS = 4;

  async function setup(vectors = VECTORS): Promise<{ peers: Peer[]; devs: QemuDevice[] }> {
    const server = res.listen('qemu', { size: 64 * 1024, vectors });
    const peers = await group(server, 3, { vectors });
    const devs = peers.map((p) => res.track(new QemuDevice(p)));
    return { peers, devs };
  }

  it('Doorbell fires the destination interrupt on that vector only', async () => {
    const { peers, devs } = await setup();
    const b = peers[1]!;
    const [da, db, dc] = devs as [QemuDevice, QemuDevice, QemuDevice];
    const ta = new Tally(da, 'interrupt');
    const tb = new Tally(db, 'interrupt');
    const tc = new Tally(dc, 'interrupt');
    for (let v = 0; v < VECTORS; v++) {
      const fired = next<[number]>(db, 'interrupt', `vector ${v}`);
      da.writel('Doorbell', ((b.id << 16) | v) >>> 0);
      expect((await fired)[0]).toBe(v);
    }
    await settle();
    expect(tb.calls).toEqual([[0], [1], [2], [3]]);
    expect(ta.count).toBe(0);
    expect(tc.count).toBe(0);
    expect(db.stats().injections).toBe(VECTORS);
    expect(da.stats().trapsByRegister.Doorbell).toEqual({ reads: 0, writes: VECTORS });
  });

  it('an unknown peer or a vector >= N is ignored: no interrupt anywhere, no throw, no eventfd write', async () => {
    const { peers, devs } = await setup();
    const [a, b] = peers as [Peer, Peer, Peer];
    const tallies = devs.map((d) => new Tally(d, 'interrupt'));
    const peerTallies = peers.map((p) => new Tally(p, 'interrupt'));
    const da = devs[0]!;
    const writesBefore = a.counters().eventfdWrites;
    const values = [
      (999 << 16) | 0, // no such peer
      (0xffff << 16) | 1,
      (b.id << 16) | VECTORS, // vector N
      (b.id << 16) | 0xff,
      (b.id << 16) | 0x104, // & 0xff = 4 = N: still out of range
      (b.id << 16) | 0xffff,
    ];
    for (const v of values) expect(() => da.writel('Doorbell', v >>> 0)).not.toThrow();
    await settle(100);
    for (const t of [...tallies, ...peerTallies]) expect(t.count).toBe(0);
    expect(a.counters().eventfdWrites).toBe(writesBefore);
    // Each write was still a trap.
    expect(da.stats().trapsByRegister.Doorbell!.writes).toBe(values.length);
  });

  it("vector 0x100 with 1 vector rings vector 0 (QEMU's & 0xFF quirk); 0x102 with 4 rings vector 2", async () => {
    {
      const { peers, devs } = await setup(1);
      const b = peers[1]!;
      const fired = next<[number]>(devs[1]!, 'interrupt', 'vector 0 via 0x100');
      devs[0]!.writel('Doorbell', ((b.id << 16) | 0x100) >>> 0);
      expect((await fired)[0]).toBe(0);
    }
    {
      const { peers, devs } = await setup(4);
      const b = peers[1]!;
      const t = new Tally(devs[1]!, 'interrupt');
      const fired = next<[number]>(devs[1]!, 'interrupt', 'vector 2 via 0x102');
      devs[0]!.writel('Doorbell', ((b.id << 16) | 0x102) >>> 0);
      expect((await fired)[0]).toBe(2);
      await settle();
      expect(t.calls).toEqual([[2]]);
    }
  });

  it('IntrStatus: a write then reads return the value, then 0; IntrMask is a plain latch; IVPosition is the ID', async () => {
    const { peers, devs } = await setup();
    const d = devs[2]!;
    d.writel('IntrStatus', 0xdeadbeef);
    expect(d.readl('IntrStatus')).toBe(0xdeadbeef);
    expect(d.readl('IntrStatus')).toBe(0);
    d.writel('IntrMask', 0x12345678);
    expect(d.readl('IntrMask')).toBe(0x12345678);
    expect(d.readl('IntrMask')).toBe(0x12345678);
    for (const [i, dev] of devs.entries()) expect(dev.readl('IVPosition')).toBe(peers[i]!.id);
    expect(d.stats().trapsByRegister).toEqual({
      IntrMask: { reads: 2, writes: 1 },
      IntrStatus: { reads: 2, writes: 1 },
      IVPosition: { reads: 1, writes: 0 },
      Doorbell: { reads: 0, writes: 0 },
    });
  });

  it('exactly one trap and one injection per message in a sparse exchange', async () => {
    const { peers, devs } = await setup();
    const b = peers[1]!;
    const [da, db] = devs as [QemuDevice, QemuDevice];
    const N = 20;
    for (let i = 0; i < N; i++) {
      const fired = next(db, 'interrupt', `message ${i}`);
      da.ring(b.id, i % VECTORS);
      await fired;
    }
    await settle();
    const sa = da.stats();
    const sb = db.stats();
    expect(sa.traps).toBe(N);
    expect(sa.trapsByRegister.Doorbell!.writes).toBe(N);
    expect(sa.injections).toBe(0);
    expect(sa.eventfdWrites).toBe(N);
    expect(sb.injections).toBe(N);
    expect(sb.traps).toBe(0);
    expect(sb.intercepts).toBe(N);
  });
});

// =============================================================================================
describe('bitmask (one pending bit per peer in the shared header)', () => {
  async function setup(n = 3): Promise<{ server: PeerServer; peers: Peer[] }> {
    const server = res.listen('bitmask', { size: 64 * 1024, bitmask: true });
    const peers = await group(server, n, { bitmask: true });
    return { server, peers };
  }

  it('ringing a busy receiver makes no eventfd write: only the 0->1 edge signals', async () => {
    const { server, peers } = await setup();
    const [a, b] = peers as [Peer, Peer, Peer];
    const sender = res.track(new BitmaskDoorbell(a));
    const header = server.header!;
    const base = a.counters();
    const arrived = next(b, 'interrupt', 'the first edge at b');
    expect(sender.ring(b.id)).toBe(true);
    await arrived;
    // b never runs a receive loop: its bit stays set.
    expect(pendingBit(server.shm.buffer, header, b.id)).toBe(true);
    const afterEdge = a.counters();
    expect(afterEdge.eventfdWrites - base.eventfdWrites).toBe(1);
    expect(afterEdge.signals - base.signals).toBe(1);

    const RINGS = 100;
    for (let i = 0; i < RINGS; i++) expect(sender.ring(b.id)).toBe(false);
    await settle();
    const after = a.counters();
    expect(after.eventfdWrites).toBe(afterEdge.eventfdWrites);
    expect(after.signals).toBe(afterEdge.signals);
    expect(after.suppressed - afterEdge.suppressed).toBe(RINGS);
    expect(after.rings - base.rings).toBe(RINGS + 1);
    expect(b.counters().interrupts).toBe(1);

    // The device model traps only on the edge, too.
    const dev = res.track(new BitmaskDevice(a));
    const c = peers[2]!;
    const arrivedC = next(c, 'interrupt', 'the edge at c');
    expect(dev.ring(c.id)).toBe(true);
    await arrivedC;
    for (let i = 0; i < 50; i++) expect(dev.ring(c.id)).toBe(false);
    const s = dev.stats();
    expect(s.trapsByRegister.Doorbell).toEqual({ reads: 0, writes: 1 });
    expect(s.traps).toBe(1);
    expect(s.rings).toBe(51);
    expect(s.suppressed).toBe(50);
    expect(s.eventfdWrites).toBe(1);
  });

  it('broadcast signals exactly the peers whose bits were clear, and returns their count', async () => {
    const { server, peers } = await setup(4);
    const [p0, p1, p2, p3] = peers as [Peer, Peer, Peer, Peer];
    const header = server.header!;
    const dbs = peers.map((p) => res.track(new BitmaskDoorbell(p)));
    // p2 is busy: its bit set by a ring from p3 (never acked).
    const busy = next(p2, 'interrupt', 'p2 made busy');
    expect(dbs[3]!.ring(p2.id)).toBe(true);
    await busy;
    for (const p of peers) p.resetCounters();
    const tallies = peers.map((p) => new Tally(p, 'interrupt'));

    const got1 = next(p1, 'interrupt', 'broadcast at p1');
    const got3 = next(p3, 'interrupt', 'broadcast at p3');
    expect(dbs[0]!.broadcast()).toBe(2);
    await Promise.all([got1, got3]);
    await settle();
    expect(tallies.map((t) => t.count)).toEqual([0, 1, 0, 1]);
    const c0 = p0.counters();
    expect(c0.rings).toBe(3);
    expect(c0.suppressed).toBe(1);
    expect(c0.signals).toBe(2);
    expect(c0.eventfdWrites).toBe(2);
    expect(p2.counters().eventfdReads).toBe(0);
    expect(p2.counters().wakeups).toBe(0);
    for (const p of [p1, p3]) expect(p.counters().interrupts).toBe(1);
    for (const p of peers) expect(pendingBit(server.shm.buffer, header, p.id)).toBe(p !== p0);

    // Everyone busy now: a second broadcast signals nobody.
    expect(dbs[0]!.broadcast()).toBe(0);
    await settle();
    expect(p0.counters().eventfdWrites).toBe(2);
    expect(p0.counters().suppressed).toBe(4);
    expect(tallies.map((t) => t.count)).toEqual([0, 1, 0, 1]);
  });

  describe('PendingClear accounting', () => {
    for (const clear of ['register', 'shm'] as const) {
      it(`clear: '${clear}' counts ${clear === 'register' ? 'one PendingClear trap per clear' : 'no trap for a clear'}`, async () => {
        const { server, peers } = await setup(2);
        const [a, b] = peers as [Peer, Peer];
        const sender = res.track(new BitmaskDoorbell(a));
        const dev = res.track(new BitmaskDevice(b, { clear }));
        const work = new Int32Array(server.shm.buffer, server.dataOffset, 2); // [produced, consumed]
        const ac = new AbortController();
        const loop = dev.serve(
          () => Atomics.load(work, 0) !== Atomics.load(work, 1),
          () => void Atomics.store(work, 1, Atomics.load(work, 0)),
          { signal: ac.signal },
        );
        const ROUNDS = 5;
        for (let i = 1; i <= ROUNDS; i++) {
          Atomics.add(work, 0, 1);
          expect(sender.ring(b.id)).toBe(true); // the receiver was asleep: an edge each round
          await waitFor(() => Atomics.load(work, 1) === i && !dev.doorbell.pending(), `round ${i} consumed and acked`);
        }
        ac.abort();
        await loop;
        const s = dev.stats();
        expect(s.acks).toBeGreaterThanOrEqual(ROUNDS);
        expect(s.injections).toBe(ROUNDS);
        expect(s.trapsByRegister.Doorbell).toEqual({ reads: 0, writes: 0 });
        if (clear === 'register') {
          expect(s.trapsByRegister.PendingClear).toEqual({ reads: 0, writes: s.acks });
          expect(s.traps).toBe(s.acks);
        } else {
          expect(s.trapsByRegister.PendingClear).toEqual({ reads: 0, writes: 0 });
          expect(s.traps).toBe(0);
        }
        expect(s.intercepts).toBe(s.traps + ROUNDS);
      });
    }
  });

  it('the receive loop re-checks after clearing: work published between drain and clear is still seen', async () => {
    const { server, peers } = await setup(2);
    const [a, b] = peers as [Peer, Peer];
    const sender = res.track(new BitmaskDoorbell(a));
    const receiver = res.track(new BitmaskDoorbell(b));
    const header = server.header!;
    const work = new Int32Array(server.shm.buffer, server.dataOffset, 2); // [produced, consumed]
    const publish = (): boolean => {
      Atomics.add(work, 0, 1);
      return sender.ring(b.id);
    };
    let armed = false;
    const late: boolean[] = []; // what the ring made inside the window returned
    const pendingWhileHandling: boolean[] = [];
    const ringsWhileHandling: boolean[] = [];
    const hasWork = (): boolean => {
      const has = Atomics.load(work, 0) !== Atomics.load(work, 1);
      if (!has && armed) {
        // The receiver drained its work and is about to clear its bit: a sender publishes now.
        // The bit is still set, so this ring is suppressed: no eventfd write, no interrupt.
        armed = false;
        late.push(publish());
      }
      return has;
    };
    const handled: number[] = [];
    const ac = new AbortController();
    const loop = receiver.serve(
      hasWork,
      () => {
        const seq = Atomics.add(work, 1, 1) + 1;
        handled.push(seq);
        pendingWhileHandling.push(receiver.pending());
        if (seq === 1) armed = true;
        // While the receiver works on the late message (after the re-check claimed the bit
        // again), senders stay quiet: this ring is suppressed and its work is seen in turn.
        if (seq === 2) ringsWhileHandling.push(publish());
      },
      { signal: ac.signal },
    );
    b.resetCounters();
    a.resetCounters();
    expect(publish()).toBe(true);
    // Without the re-check the late message is stranded for good (nobody rings again): this wait
    // is where such a loop fails.
    await waitFor(() => handled.length === 3 && !receiver.pending(), () => `3 messages handled and the bit clear (handled ${handled.join(',')})`, 10_000);
    ac.abort();
    await loop;

    expect(handled).toEqual([1, 2, 3]);
    expect(late).toEqual([false]); // suppressed: the re-check alone found it
    expect(ringsWhileHandling).toEqual([false]); // the claim set the bit again
    expect(pendingWhileHandling).toEqual([true, true, true]);
    expect(a.counters().eventfdWrites).toBe(1);
    expect(a.counters().suppressed).toBe(2);
    expect(b.counters().interrupts).toBe(1);
    expect(pendingBit(server.shm.buffer, header, b.id)).toBe(false);
  });

  // The servers of these two run in a child process: a peer that refuses the header leaves
  // with the rest of the connect sequence unread, which the server must survive (kill.test.ts
  // checks that); here only the peer's side is asserted.
  it('a bitmask peer refuses a server without the header (HeaderError)', async () => {
    const server = await startServerChild({ size: 64 * 1024 });
    const attempt = Peer.connect(server.socketPath, { bitmask: true, timeout: 20_000 });
    await expect(attempt).rejects.toBeInstanceOf(HeaderError);
    await expect(attempt).rejects.toMatchObject({ code: ErrorCodes.HEADER, message: expect.stringMatching(/magic/) });
    expect(ErrorCodes.HEADER).toBe('ERR_IVSHMEM_HEADER');
    // The server saw it go and still serves a peer that does not ask for the header.
    await server.waitFor((m) => m.type === 'peer-left' || m.type === 'fatal', 'the server to see the refusing peer go');
    const plain = await res.connect(server.socketPath);
    expect(() => plain.header).toThrow(RangeError);
    expect(server.messages.filter((m) => m.type === 'fatal'), server.diagnostics()).toEqual([]);
  });

  it('a corrupted header version (or magic) is refused with HeaderError', async () => {
    // In this process: readHeader() on a corrupted copy.
    const local = res.listen('corrupt', { size: 64 * 1024, bitmask: true });
    const view = new DataView(local.shm.buffer);
    expect(readHeader(local.shm.buffer)).toEqual(local.header);
    expect(view.getUint32(8, true)).toBe(HEADER_VERSION);
    view.setUint32(8, HEADER_VERSION + 1, true);
    expect(() => readHeader(local.shm.buffer)).toThrow(HeaderError);
    view.setUint32(8, HEADER_VERSION, true);
    view.setUint8(0, view.getUint8(0) ^ 0xff);
    expect(() => readHeader(local.shm.buffer)).toThrow(/magic/);
    view.setUint8(0, view.getUint8(0) ^ 0xff);
    expect(readHeader(local.shm.buffer)).toEqual(local.header);

    // Over the wire: a fresh server per attempt, its header corrupted before the peer connects.
    const version = await startServerChild({ size: 64 * 1024, bitmask: true }, 'server (bad version)');
    await version.request({ cmd: 'poke32', offset: 8, value: HEADER_VERSION + 1 });
    const attempt = Peer.connect(version.socketPath, { bitmask: true, timeout: 20_000 });
    await expect(attempt).rejects.toBeInstanceOf(HeaderError);
    await expect(attempt).rejects.toMatchObject({ code: 'ERR_IVSHMEM_HEADER', message: expect.stringMatching(/version/) });

    const magic = await startServerChild({ size: 64 * 1024, bitmask: true }, 'server (bad magic)');
    await magic.request({ cmd: 'poke32', offset: 0, value: 0x12345678 });
    await expect(Peer.connect(magic.socketPath, { bitmask: true, timeout: 20_000 })).rejects.toMatchObject({
      code: 'ERR_IVSHMEM_HEADER',
      message: expect.stringMatching(/magic/),
    });
  });
});
