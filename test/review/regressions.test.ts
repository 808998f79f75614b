/**
 * Regressions for the findings of a code review of lib/ and native/ (each test fails without
 * its fix): concurrent sends, throwing listeners, one receive loop per peer, devices outliving
 * their peer, failed edge signals, native argument checks.
 */
import { execFile } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../lib/binding.js';
import { writeHeader, headerLayout } from '../../lib/header.js';
import { nativeMappingOf } from '../../lib/shared-memory.js';
import {
  BitmaskDoorbell,
  ChannelConsumer,
  ChannelProducer,
  EventFd,
  Legacy2010Device,
  Peer,
  PeerServer,
  SharedMemory,
  createChannel,
  isInUseError,
} from '../../lib/index.js';
import { requireBuilt, uniqueSocketPath } from '../helpers/paths.js';

const run = promisify(execFile);
const open: { close(): void }[] = [];
afterEach(() => {
  for (const r of open.splice(0).reverse()) r.close();
});
const track = <T extends { close(): void }>(r: T): T => {
  open.push(r);
  return r;
};

async function network(options: { bitmask?: boolean } = {}): Promise<{ server: PeerServer; a: Peer; b: Peer }> {
  const server = track(PeerServer.listen({ socketPath: uniqueSocketPath('review'), handleSignals: false, size: 1 << 16, ...options }));
  const a = track(await Peer.connect(server.socketPath, { bitmask: options.bitmask === true }));
  const b = track(await Peer.connect(server.socketPath, { bitmask: options.bitmask === true }));
  await a.waitForPeer(b.id);
  await b.waitForPeer(a.id);
  return { server, a, b };
}

describe('channels', () => {
  it('concurrent send() calls on a full ring all complete, in call order', async () => {
    const { server, a, b } = await network({ bitmask: true });
    createChannel(a, { offset: server.dataOffset, capacity: 256, producer: a.id, consumer: b.id });
    const producer = track(new ChannelProducer(a, server.dataOffset));
    const consumer = track(new ChannelConsumer(b, server.dataOffset));
    const sends = Array.from({ length: 50 }, (_, i) => producer.send(new Uint8Array([i, ...new Array(40).fill(i)])));
    const seen: number[] = [];
    for await (const { data } of consumer) {
      seen.push(data[0]!);
      if (seen.length === 50) break;
    }
    await Promise.all(sends);
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });
});

describe('peers', () => {
  it("a throwing 'peer-joined' listener is an uncaught exception, not a lost server", async () => {
    const index = requireBuilt();
    const script = `
      import { PeerServer, Peer } from ${JSON.stringify(index)};
      const server = PeerServer.listen({ socketPath: ${JSON.stringify(uniqueSocketPath('throw'))}, handleSignals: false });
      const a = await Peer.connect(server.socketPath);
      a.on('server-lost', () => { console.log('server-lost'); });
      a.on('peer-joined', () => { throw new Error('user listener bug'); });
      process.on('uncaughtException', (e) => {
        console.log('uncaught: ' + e.message + '; server lost: ' + a.serverLost);
        process.exit(0);
      });
      await Peer.connect(server.socketPath);
    `;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 });
    expect(stdout.trim()).toBe('uncaught: user listener bug; server lost: false');
  });
});

describe('bitmask receive loops', () => {
  it('a second receive loop on the same peer is refused (InUseError); after the first ends, one may start', async () => {
    const { b } = await network({ bitmask: true });
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

describe('devices', () => {
  it('a legacy device whose peer closes right after an IntrMask write does not throw later', async () => {
    const { b } = await network();
    const device = new Legacy2010Device(b);
    device.writew('IntrMask', 0xffff); // queues a look at IntrStatus
    b.close();
    await new Promise((r) => setImmediate(r)); // the queued look runs: it must not touch the memory
    expect(device.closed).toBe(true);
  });
});

describe('native doorbell', () => {
  function bitmaskDoorbell(): { doorbell: ReturnType<typeof makeDoorbell>; pending: BigUint64Array; live: BigUint64Array } {
    const shm = track(SharedMemory.create({ size: 8192 }));
    const layout = headerLayout(64);
    writeHeader(shm.buffer, layout);
    const doorbell = makeDoorbell(shm, layout);
    return {
      doorbell,
      pending: new BigUint64Array(shm.buffer, layout.pendingOffset, 1),
      live: new BigUint64Array(shm.buffer, layout.liveOffset, 1),
    };
  }
  function makeDoorbell(shm: SharedMemory, layout: ReturnType<typeof headerLayout>) {
    return track(new native.Doorbell(nativeMappingOf(shm), { self: 0, words: 1, pendingOffset: layout.pendingOffset, liveOffset: layout.liveOffset }));
  }

  it('an edge whose eventfd write fails takes the bit back (no peer left suppressed forever)', () => {
    const { doorbell, pending } = bitmaskDoorbell();
    const readOnly = openSync('/dev/null', 'r'); // write(2) on it fails with EBADF
    try {
      doorbell.setPeer(1, [readOnly]);
    } finally {
      closeSync(readOnly);
    }
    expect(() => doorbell.ring(1)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'write' }));
    expect(pending[0]).toBe(0n);
    expect(() => doorbell.edge(1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(pending[0]).toBe(0n);
  });

  it('a broadcast signals every other edge before it reports a failed one, whose bit it clears', () => {
    const { doorbell, pending, live } = bitmaskDoorbell();
    const readOnly = openSync('/dev/null', 'r');
    const good = track(new EventFd());
    try {
      doorbell.setPeer(1, [readOnly]);
      doorbell.setPeer(2, [good.fd]);
    } finally {
      closeSync(readOnly);
    }
    live[0] = 0b111n;
    expect(() => doorbell.broadcast()).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(good.drain()).toBe(1);
    expect(pending[0]).toBe(0b100n);
  });

  it('setPeer with no eventfd is a RangeError', () => {
    const { doorbell } = bitmaskDoorbell();
    expect(() => doorbell.setPeer(3, [])).toThrow(RangeError);
  });
});

describe('native argument checks', () => {
  it('new Watcher(fd, notAFunction) throws a TypeError and leaves no libuv handle behind', () => {
    const before = native.liveResources();
    const e = track(new EventFd());
    const Watcher = native.Watcher as unknown as new (fd: unknown, cb: unknown) => unknown;
    expect(() => new Watcher(e.fd, 'not a function')).toThrow(TypeError);
    expect(native.liveResources()).toBe(before + 1); // only the eventfd
  });

  it('new Mapping(fd, notANumber) closes the fd it was given', () => {
    const fd = native.memfdCreate('review');
    const Mapping = native.Mapping as unknown as new (fd: number, size: unknown) => unknown;
    expect(() => new Mapping(fd, 'x')).toThrow();
    expect(() => native.dupFd(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});

describe('a stray pending bit', () => {
  it('a sleeping receiver whose bit was set without a signal (a sender that missed a leave) still wakes', async () => {
    const { b } = await network({ bitmask: true });
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

describe('connect with bad options', () => {
  it('Peer.connect with an invalid maxVectors rejects with a RangeError and leaves no socket open', async () => {
    const { server } = await network();
    const { readdirSync } = await import('node:fs');
    const fds = (): number => readdirSync('/proc/self/fd').length;
    const before = fds();
    await expect(Peer.connect(server.socketPath, { maxVectors: 0 })).rejects.toThrow(RangeError);
    expect(fds()).toBe(before);
  });
});
