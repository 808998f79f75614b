/**
 * 1,000 create/close cycles of each resource leave this process exactly as they found it: the
 * same number of open fds, no mapping left behind, and the native live-resource count back at
 * its starting value.
 */
import { existsSync, unlinkSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { native } from '../../lib/sys/binding.js';
import { EventFd, FdWatcher, SharedMemory, UnixSocket, closeFd } from '../../lib/sys/index.js';
import { uniqueShmName, uniqueSocketPath, useTempDir } from '../helpers/paths.js';
import { turn } from '../helpers/wait.js';
import { fdCount, fdTargets, mapsLines } from './helpers.js';

const CYCLES = 1000;
const WARMUP = 50;

interface Snapshot {
  fds: number;
  fdKinds: Map<string, number>;
  maps: number;
  namedMaps: number;
  ownMaps: number;
  live: number;
}

/** fd targets by kind ('socket', 'anon_inode:[eventfd]', '/dev/shm', '/memfd'...). */
function fdKinds(): Map<string, number> {
  const kinds = new Map<string, number>();
  for (const t of fdTargets()) {
    const kind = t.startsWith('socket:') ? 'socket' : t.startsWith('pipe:') ? 'pipe' : t.startsWith('/dev/shm/') ? '/dev/shm' : t.startsWith('/memfd:') ? '/memfd' : t;
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return kinds;
}

function snapshot(): Snapshot {
  const maps = mapsLines();
  return {
    fds: fdCount(),
    fdKinds: fdKinds(),
    maps: maps.length,
    // Lines with a path (files, memfds, shm objects, [vdso]...): stable once warmed up. The
    // anonymous rest is the JS heap and malloc arenas, which come and go on their own.
    namedMaps: maps.filter((l) => {
      const path = l.split(/\s+/).slice(5).join(' ');
      return path !== '' && path !== '[heap]' && !path.startsWith('[anon');
    }).length,
    // Mappings this package makes: named shm objects and memfds.
    ownMaps: maps.filter((l) => l.includes('/dev/shm/') || l.includes('/memfd:')).length,
    live: native.liveResources(),
  };
}

/**
 * Runs `cycle` WARMUP times (so lazily created fds and V8 heap pages exist before the baseline),
 * then CYCLES times, and compares. fds, named mappings and the package's own mappings must be
 * exactly as before. The total /proc/self/maps line count cannot be: V8 maps and unmaps 256 KiB
 * heap pages and glibc grows its arenas as garbage accumulates (measured: up to ~30 lines either
 * way over 1,000 cycles, with no trend). It gets an allowance far below the 1,000 lines a leak
 * of one mapping per cycle would add.
 */
async function expectNoLeak(cycle: (i: number) => void | Promise<void>): Promise<void> {
  for (let i = 0; i < WARMUP; i++) await cycle(i);
  await turn();
  const before = snapshot();
  for (let i = 0; i < CYCLES; i++) await cycle(i);
  // Let uv_close callbacks and anything else deferred run.
  await turn();
  await turn();
  const after = snapshot();
  expect(after.live).toBe(before.live);
  expect(after.fds).toBe(before.fds);
  expect(after.fdKinds).toEqual(before.fdKinds);
  expect(after.ownMaps).toBe(before.ownMaps);
  expect(after.namedMaps).toBe(before.namedMaps);
  expect(Math.abs(after.maps - before.maps)).toBeLessThan(CYCLES / 5);
}

const dir = useTempDir('leak');
let liveAtStart = 0;
beforeAll(() => {
  liveAtStart = native.liveResources();
});

describe(`${CYCLES} create/close cycles leak nothing`, () => {
  it('SharedMemory, named (create, write, unlink, close)', async () => {
    await expectNoLeak((i) => {
      const shm = SharedMemory.create({ name: uniqueShmName('leak'), size: 4096 });
      shm.bytes()[0] = i & 0xff;
      shm.unlink();
      shm.close();
    });
  });

  it('SharedMemory, named and reopened by a second mapping', async () => {
    await expectNoLeak(() => {
      const shm = SharedMemory.create({ name: uniqueShmName('leak2'), size: 8192 });
      const other = SharedMemory.open(shm.name!);
      other.bytes()[1] = 1;
      shm.unlink();
      other.close();
      shm.close();
    });
  });

  it('SharedMemory, memfd (with views kept across close)', async () => {
    const kept: Uint8Array[] = [];
    await expectNoLeak(() => {
      const shm = SharedMemory.create({ size: 65536 });
      kept.push(shm.bytes(0, 16));
      shm.close();
    });
    expect(kept.every((v) => v.byteLength === 0)).toBe(true);
  });

  it('SharedMemory.fromFd with dup', async () => {
    const base = SharedMemory.create({ size: 4096 });
    try {
      await expectNoLeak(() => {
        SharedMemory.fromFd(base.fd, { dup: true }).close();
      });
    } finally {
      base.close();
    }
  });

  it('EventFd (signal, drain, close)', async () => {
    await expectNoLeak(() => {
      const ev = new EventFd();
      ev.signal(2);
      ev.drain();
      ev.close();
    });
  });

  it('FdWatcher started then closed (the loop turns so uv_close callbacks run)', async () => {
    const ev = new EventFd();
    try {
      await expectNoLeak(async () => {
        const watcher = new FdWatcher(ev.fd);
        watcher.on('readable', () => {});
        watcher.start();
        watcher.close();
        await turn();
      });
    } finally {
      ev.close();
    }
  });

  it('EventFd.watch() that fired, then closed', async () => {
    await expectNoLeak(async () => {
      const ev = new EventFd();
      let fired = false;
      const watcher = ev.watch(() => {
        fired = true;
      });
      ev.signal();
      while (!fired) await turn();
      watcher.close();
      ev.close();
      await turn();
    });
  });

  it('UnixSocket listen, connect, accept, send, recv, close, unlink', async () => {
    await expectNoLeak(() => {
      const path = uniqueSocketPath('l', dir);
      const listener = UnixSocket.listen(path);
      const client = UnixSocket.connect(path);
      const server = listener.accept();
      if (server === null) throw new Error('no pending connection');
      client.send(new Uint8Array(8));
      if (server.recv().kind !== 'message') throw new Error('no message');
      server.close();
      client.close();
      listener.close();
      unlinkSync(path);
    });
  });

  it('fd passing: send an fd, close the received copy', async () => {
    const path = uniqueSocketPath('p', dir);
    const listener = UnixSocket.listen(path);
    const client = UnixSocket.connect(path);
    const server = listener.accept()!;
    const message = new Uint8Array(8);
    try {
      await expectNoLeak((i) => {
        const ev = new EventFd();
        if (!client.send(message, ev.fd)) throw new Error(`send ${i} found the buffer full`);
        ev.close();
        const r = server.recv();
        if (r.kind !== 'message' || r.fd === null) throw new Error(`cycle ${i}: ${JSON.stringify(r)}`);
        closeFd(r.fd);
      });
    } finally {
      server.close();
      client.close();
      listener.close();
      unlinkSync(path);
    }
  });

  it('a socket closed with an unfinished message and its fd still pending', async () => {
    const path = uniqueSocketPath('u', dir);
    const listener = UnixSocket.listen(path);
    try {
      await expectNoLeak(() => {
        const client = UnixSocket.connect(path);
        const server = listener.accept()!;
        const ev = new EventFd();
        client.send(new Uint8Array(8), ev.fd); // never received
        ev.close();
        client.close();
        server.close();
      });
    } finally {
      listener.close();
      unlinkSync(path);
    }
  });

  it('failed constructors and calls', async () => {
    const taken = uniqueSocketPath('t', dir);
    const holder = UnixSocket.listen(taken);
    try {
      await expectNoLeak(() => {
        const attempts: (() => unknown)[] = [
          () => EventFd.adopt(987654),
          () => EventFd.adopt(native.memfdCreate('not-an-eventfd')),
          () => SharedMemory.fromFd(native.memfdCreate('empty')),
          () => SharedMemory.fromFd(987654, { dup: true }),
          () => SharedMemory.create({ size: 2 ** 52 }),
          () => SharedMemory.open(uniqueShmName('absent')),
          () => new FdWatcher(987654),
          () => UnixSocket.connect(`${taken}.absent`),
          () => UnixSocket.listen(taken),
        ];
        for (const attempt of attempts) {
          let failed = false;
          try {
            attempt();
          } catch {
            failed = true;
          }
          if (!failed) throw new Error(`expected ${attempt.toString()} to fail`);
        }
      });
    } finally {
      holder.close();
      unlinkSync(taken);
    }
    expect(existsSync(`${taken}.absent`)).toBe(false);
  });

  it('liveResources() is back to its starting value', () => {
    expect(native.liveResources()).toBe(liveAtStart);
  });
});

describe('liveResources() counts what is open', () => {
  it('goes up by one per resource and back down on close', async () => {
    const start = native.liveResources();
    const shm = SharedMemory.create({ size: 4096 });
    const ev = new EventFd();
    const watcher = new FdWatcher(ev.fd).start();
    const path = uniqueSocketPath('c', dir);
    const listener = UnixSocket.listen(path);
    const client = UnixSocket.connect(path);
    const server = listener.accept()!;
    expect(native.liveResources()).toBe(start + 6);
    for (const r of [server, client, listener, watcher, ev, shm]) r.close();
    unlinkSync(path);
    await turn();
    expect(native.liveResources()).toBe(start);
  });
});
