/**
 * Process and thread lifetimes, each in a forked child: ref/unref, worker teardown through the
 * environment cleanup hook, exit with resources open, and the GC finalizer backstop.
 */
import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { killAllChildren, type ChildMessage } from '../helpers/children.js';
import { uniqueShmName, uniqueSocketPath, useTempDir } from '../helpers/paths.js';
import { sleep } from '../helpers/wait.js';
import { nodeChild } from './helpers.js';

const dir = useTempDir('life');
afterEach(async () => {
  await killAllChildren();
});

interface Census {
  fds: number;
  eventfds: number;
  sockets: number;
  shmFds: number;
  maps: number;
  namedMaps: number;
  shmMaps: number;
}

describe('ref and unref', () => {
  it("an unref'd active watcher lets the process exit on its own, with code 0", async () => {
    const child = nodeChild('watcher-ref.mjs', ['unref']);
    const ready = await child.next('ready');
    expect(ready).toMatchObject({ active: true, hasRef: false });
    // beforeExit: the loop ran dry by itself; nothing called process.exit.
    expect(await child.next('beforeExit')).toMatchObject({ active: true, hasRef: false });
    expect(await child.exit()).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
  });

  it("a ref'd watcher keeps the process alive", async () => {
    const child = nodeChild('watcher-ref.mjs', ['ref']);
    expect(await child.next('ready')).toMatchObject({ active: true, hasRef: true });
    await sleep(1000);
    expect(child.running).toBe(true);
    expect(child.messages.map((m) => m.type)).toEqual(['ready']);
    await child.kill();
    expect(child.proc.signalCode).toBe('SIGKILL');
  });

  it('unref() then ref() keeps it alive again', async () => {
    const child = nodeChild('watcher-ref.mjs', ['reref']);
    expect(await child.next('ready')).toMatchObject({ hasRef: true });
    await sleep(1000);
    expect(child.running).toBe(true);
    await child.kill();
  });

  it("closing the ref'd watcher lets the process exit", async () => {
    const child = nodeChild('watcher-ref.mjs', ['close']);
    expect(await child.next('ready')).toMatchObject({ hasRef: true });
    await child.next('closed');
    expect(await child.next('beforeExit')).toMatchObject({ active: false, hasRef: false });
    expect(await child.exit()).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
  });
});

describe('worker threads that exit without closing anything', () => {
  it('the env cleanup hook releases every fd and mapping; the process does not crash', async () => {
    const modes = ['exit', 'exit', 'terminate', 'terminate', 'natural', 'natural'];
    const prefix = uniqueShmName('worker');
    const child = nodeChild('worker-teardown.mjs', [dir, prefix, ...modes]);
    const { baseline, liveMain } = (await child.next('baseline')) as ChildMessage & { baseline: Census; liveMain: number };
    expect(liveMain).toBe(0);
    for (const mode of modes) {
      const r = (await child.next('result')) as ChildMessage & {
        mode: string;
        code: number;
        workerLive: number;
        during: Census;
        after: Census;
      };
      expect(r.mode).toBe(mode);
      expect(r.code).toBe(mode === 'terminate' ? 1 : 0);
      // The worker really held resources: 11 live native objects, 2 shm mappings, 3 sockets.
      expect(r.workerLive).toBe(11);
      expect(r.during.shmMaps).toBe(baseline.shmMaps + 2);
      expect(r.during.sockets).toBe(baseline.sockets + 3);
      expect(r.during.eventfds).toBeGreaterThanOrEqual(baseline.eventfds + 3);
      // ...and after it ended, all of them were released.
      const { maps: afterMaps, ...afterExact } = r.after;
      const { maps: baseMaps, ...baseExact } = baseline;
      expect(afterExact, `after worker (${mode})`).toEqual(baseExact);
      // Anonymous heap mappings come and go (see leaks.test.ts); a leaked region per worker
      // would show in shmMaps/namedMaps above.
      expect(Math.abs(afterMaps - baseMaps)).toBeLessThan(32);
    }
    const done = await child.next('done');
    expect(done.liveMain).toBe(0);
    expect(await child.exit()).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
    for (let n = 1; n <= modes.length + 2; n++) expect(existsSync(`/dev/shm${prefix}-${n}`)).toBe(false);
  });
});

describe('process exit with resources open', () => {
  it.each([
    ['process.exit(0) with an active ref\'d watcher', 'explicit'],
    ["the script ending with an unref'd watcher", 'natural'],
    ['process.exit(0) while a worker holds resources', 'worker'],
  ])('%s exits 0 cleanly', async (_what, mode) => {
    const name = uniqueShmName('exit');
    const child = nodeChild('exit-open.mjs', [mode, name, uniqueSocketPath('x', dir)]);
    await child.next('ready');
    expect(await child.next('exit')).toMatchObject({ code: 0 });
    expect(await child.exit()).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
    expect(existsSync(`/dev/shm${name}`)).toBe(false);
  });
});

describe('GC finalizers are a backstop for resources dropped without close()', () => {
  it.each([
    ['200 EventFds', 'eventfd'],
    ['200 SharedMemory memfds', 'shm'],
  ])('%s: their fds (and mappings) are released after gc()', async (_what, kind) => {
    const child = nodeChild('gc-backstop.mjs', [kind], { nodeArgs: ['--expose-gc'] });
    const r = (await child.next('result')) as ChildMessage & {
      before: Census;
      peak: Census;
      after: Census;
      liveBefore: number;
      livePeak: number;
      liveAfter: number;
    };
    expect(r.peak.fds).toBe(r.before.fds + 200);
    expect(r.livePeak).toBe(r.liveBefore + 200);
    if (kind === 'eventfd') expect(r.peak.eventfds).toBe(r.before.eventfds + 200);
    if (kind === 'shm') expect(r.peak.shmMaps).toBe(r.before.shmMaps + 200);
    expect(r.after.fds).toBe(r.before.fds);
    expect(r.after.eventfds).toBe(r.before.eventfds);
    expect(r.after.shmFds).toBe(r.before.shmFds);
    expect(r.after.shmMaps).toBe(r.before.shmMaps);
    expect(r.liveAfter).toBe(r.liveBefore);
    expect(await child.exit()).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
  });
});
