/**
 * LeaseKeeper: a native thread advances a u32 of shared memory every intervalMs (never to 0),
 * whatever the event loop does, until stop() clears it; a process that dies stops advancing it.
 * Watched through the SharedMemory's own buffer here, and in another process's memory (a child
 * holding the lease, SIGKILLed). No thread and no native resource outlives a stop().
 *
 * Waits have generous timeouts and assert no timing beyond "it advanced" or "it stood still".
 */
import { readdirSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../lib/sys/binding.js';
import { LeaseKeeper } from '../../lib/sys/lease.js';
import { SharedMemory } from '../../lib/sys/index.js';
import { JsonChild, killAllChildren } from '../helpers/children.js';
import { closeTracked, track } from '../helpers/network.js';
import { Scratch } from '../helpers/paths.js';
import { sleep, waitFor, WAIT_MS } from '../helpers/wait.js';
import { fdCount, systemError } from './helpers.js';

const INTERVAL = 20;
const scratch = new Scratch();
const keepers: LeaseKeeper[] = [];

afterEach(async () => {
  for (const k of keepers.splice(0)) k.stop();
  await killAllChildren();
  closeTracked();
  scratch.cleanup();
});

// The keepers' threads, by name: Node's own threads may come and go meanwhile (one ended in the
// middle of a test here once).
const threads = (): number =>
  readdirSync('/proc/self/task').filter((task) => {
    try {
      return readFileSync(`/proc/self/task/${task}/comm`, 'utf8') === 'ivshmem-lease\n';
    } catch {
      return false; // ended between the listing and the read
    }
  }).length;

function keep(fd: number, fileOffset: number, offset: number, intervalMs = INTERVAL): LeaseKeeper {
  const k = new LeaseKeeper(fd, fileOffset, offset, intervalMs);
  keepers.push(k);
  return k;
}

/** A 64 KiB memfd and the u32 at byte `offset` of it, read with Atomics. */
function memory(offset: number): { shm: SharedMemory; word: () => number; set: (v: number) => void } {
  const shm = track(SharedMemory.create({ size: 65536 }));
  const view = new Uint32Array(shm.buffer, offset, 1);
  return { shm, word: () => Atomics.load(view, 0), set: (v) => void Atomics.store(view, 0, v) };
}

/** Resolves once `word()` has changed `times` times (polled every 2 ms); returns the values seen. */
async function advances(word: () => number, times: number, what: string): Promise<number[]> {
  const seen = [word()];
  await waitFor(() => {
    const v = word();
    if (v !== seen[seen.length - 1]) seen.push(v);
    return seen.length > times;
  }, what);
  return seen;
}

describe('LeaseKeeper in this process', () => {
  it('advances the word every interval by one, never to 0', async () => {
    const { shm, word } = memory(64);
    const k = keep(shm.fd, 0, 64);
    expect(k.stopped).toBe(false);
    expect(word()).toBeGreaterThanOrEqual(1); // renewed in the constructor already
    const seen = await advances(word, 5, 'five renewals');
    expect(seen.every((v) => v !== 0)).toBe(true);
    // One writer that adds one: strictly increasing (a 2 ms poll can miss a value, never reorder them).
    for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeGreaterThan(seen[i - 1]!);
    expect(seen[seen.length - 1]!).toBeGreaterThanOrEqual(6);
    // The neighbours are untouched.
    expect([new Uint32Array(shm.buffer, 60, 1)[0], new Uint32Array(shm.buffer, 68, 1)[0]]).toEqual([0, 0]);
  });

  it('renews once at start, then not before the interval is up', async () => {
    const { shm, word } = memory(96);
    const k = keep(shm.fd, 0, 96, 60_000);
    expect(word()).toBe(1);
    await sleep(100);
    expect(word()).toBe(1);
    k.stop(); // wakes the thread at once: no waiting out the interval
    expect(word()).toBe(0);
  });

  it('from 0xffffffff it skips 0 to 1: in the constructor and in the thread', async () => {
    const { shm, word, set } = memory(128);
    set(0xffffffff);
    const k = keep(shm.fd, 0, 128, 60_000); // no renewal by the thread in this test's time
    expect(word()).toBe(1);
    k.stop();
    keep(shm.fd, 0, 128);
    await advances(word, 1, 'a renewal by the thread');
    set(0xffffffff);
    // The thread's next renewal: 1, where a plain increment would give 0.
    await waitFor(() => word() !== 0xffffffff, 'the renewal after 0xffffffff');
    expect(word()).toBe(1);
  });

  it('keeps advancing while the JS event loop is blocked', async () => {
    const { shm, word } = memory(256);
    keep(shm.fd, 0, 256);
    await advances(word, 1, 'the thread running');
    let timerRan = false;
    setTimeout(() => {
      timerRan = true;
    }, 0);
    const before = word();
    const start = Date.now();
    // 200 ms of busy-wait, and longer (still blocked) on a machine too loaded to renew twice in it.
    while (Date.now() - start < 200 || (word() - before < 2 && Date.now() - start < WAIT_MS)) {
      // spin
    }
    const during = word() - before;
    expect(timerRan).toBe(false); // the loop really was blocked all along
    expect(during).toBeGreaterThanOrEqual(2);
  });

  it('stop() joins the thread and clears the word to 0; it stays 0; stop() is idempotent', async () => {
    const { shm, word } = memory(512);
    const tasks = threads();
    const k = keep(shm.fd, 0, 512);
    expect(threads()).toBe(tasks + 1);
    await advances(word, 2, 'two renewals');
    k.stop();
    expect([k.stopped, word(), threads()]).toEqual([true, 0, tasks]);
    await sleep(INTERVAL * 6);
    expect(word()).toBe(0);
    k.stop();
    k[Symbol.dispose]();
    expect([k.stopped, word()]).toEqual([true, 0]);
  });

  it('[Symbol.dispose] stops it', async () => {
    const { shm, word } = memory(1024);
    const live = native.liveResources();
    const k = new LeaseKeeper(shm.fd, 0, 1024, INTERVAL);
    expect(native.liveResources()).toBe(live + 1);
    await advances(word, 1, 'a renewal');
    k[Symbol.dispose]();
    expect([k.stopped, word(), native.liveResources()]).toEqual([true, 0, live]);
  });

  it('the word is at fileOffset + offset of the object, in any page; the keeper maps that page itself', async () => {
    const { shm, word } = memory(3 * 4096 + 8);
    const second = track(SharedMemory.fromFd(shm.fd, { dup: true }));
    const k = keep(shm.fd, 4096, 2 * 4096 + 8);
    expect(word()).toBeGreaterThanOrEqual(1);
    // Closing the owner's mapping (and fd) does not touch the keeper's: it renews on.
    const seen = new Uint32Array(second.buffer, 3 * 4096 + 8, 1);
    shm.close();
    await advances(() => Atomics.load(seen, 0), 2, 'renewals after the owner closed its mapping');
    k.stop();
    expect(Atomics.load(seen, 0)).toBe(0);
    // Nothing else of the object was written.
    expect(new Uint8Array(second.buffer).every((b) => b === 0)).toBe(true);
  });

  it('bad arguments are refused before any thread starts, leaving nothing behind', () => {
    const { shm } = memory(0);
    const small = track(SharedMemory.create({ size: 4096 }));
    const before = { live: native.liveResources(), fds: fdCount(), tasks: threads() };
    for (const offset of [1, 2, 6, 4099, -4, 1.5]) expect(() => new LeaseKeeper(shm.fd, 0, offset, INTERVAL), `offset ${offset}`).toThrow(RangeError);
    for (const ms of [0, -1, 1.5, 2 ** 31]) expect(() => new LeaseKeeper(shm.fd, 0, 0, ms), `intervalMs ${ms}`).toThrow(RangeError);
    for (const fileOffset of [-4096, 0.5]) expect(() => new LeaseKeeper(shm.fd, fileOffset, 0, INTERVAL)).toThrow(RangeError);
    // A file offset off a page boundary: refused natively.
    expect(() => new LeaseKeeper(shm.fd, 100, 0, INTERVAL)).toThrow(RangeError);
    expect(() => new LeaseKeeper(-1, 0, 0, INTERVAL)).toThrow(RangeError);
    expect(() => new LeaseKeeper('3' as unknown as number, 0, 0, INTERVAL)).toThrow(TypeError);
    // An fd that is not open: the mmap fails, a system error naming it.
    const fd = native.dupFd(shm.fd);
    native.closeFd(fd);
    expect(systemError(() => new LeaseKeeper(fd, 0, 0, INTERVAL))).toMatchObject({ code: 'EBADF', syscall: 'fstat' });
    // A word past the end of the object (SIGBUS at its first renewal): refused.
    expect(() => new LeaseKeeper(small.fd, 0, 4096, INTERVAL)).toThrow(/past the end/);
    expect(() => new LeaseKeeper(small.fd, 4096, 0, INTERVAL)).toThrow(RangeError);
    expect({ live: native.liveResources(), fds: fdCount(), tasks: threads() }).toEqual(before);
    expect(new Uint8Array(shm.buffer).every((b) => b === 0)).toBe(true);
  });

  it('200 start/stop cycles leave no extra thread, fd or native resource', () => {
    const { shm, word } = memory(2048);
    const cycle = (): void => {
      const k = new LeaseKeeper(shm.fd, 0, 2048, 1);
      if (word() === 0) throw new Error('not renewed at start');
      k.stop();
      if (word() !== 0) throw new Error('not cleared at stop');
    };
    for (let i = 0; i < 10; i++) cycle();
    const before = { live: native.liveResources(), fds: fdCount(), tasks: threads() };
    for (let i = 0; i < 200; i++) cycle();
    expect({ live: native.liveResources(), fds: fdCount(), tasks: threads() }).toEqual(before);
    // And with many at once: one thread each, all gone after.
    const many = Array.from({ length: 20 }, (_, i) => new LeaseKeeper(shm.fd, 0, 4096 + 4 * i, 5));
    expect(threads()).toBe(before.tasks + 20);
    expect(native.liveResources()).toBe(before.live + 20);
    for (const k of many) k.stop();
    expect({ live: native.liveResources(), fds: fdCount(), tasks: threads() }).toEqual(before);
  });
});

describe('LeaseKeeper in another process', () => {
  async function holder(options: { closeMemory?: boolean } = {}) {
    const name = scratch.shmName('lease');
    const shm = track(SharedMemory.create({ name, size: 65536 }));
    const offset = 4096 + 40;
    const view = new Uint32Array(shm.buffer, offset, 1);
    const word = (): number => Atomics.load(view, 0);
    const child = JsonChild.fixture('sys/lease-holder.mjs', { name, offset, intervalMs: INTERVAL, ...options }, 'lease holder');
    const ready = await child.next('ready');
    return { child, ready, word, shm };
  }

  it('a child keeps the word advancing; SIGKILLed, the word stands still (not cleared) from then on', async () => {
    const { child, ready, word } = await holder();
    expect(ready.word).toBeGreaterThanOrEqual(1); // renewed before 'ready'
    expect(ready.pid).toBe(child.pid);
    const seen = await advances(word, 3, "the child's renewals");
    expect(seen.every((v) => v > 0)).toBe(true);
    await child.kill('SIGKILL');
    expect(child.running).toBe(false);
    const last = word();
    expect(last).toBeGreaterThan(0);
    // 15 intervals and more: a live keeper would have renewed many times.
    const samples: number[] = [];
    const end = Date.now() + 20 * INTERVAL;
    while (Date.now() < end) {
      samples.push(word());
      await sleep(INTERVAL / 2);
    }
    expect(samples.length).toBeGreaterThan(5);
    expect(new Set(samples)).toEqual(new Set([last]));
  });

  it('a child whose event loop is blocked still renews (seen from its own mapping)', async () => {
    const { child, word } = await holder();
    await advances(word, 1, "the child's first renewal");
    const r = await child.request({ cmd: 'block', ms: 200 });
    expect(r.blocked).toBeGreaterThanOrEqual(200);
    expect(r.after - r.before).toBeGreaterThanOrEqual(2);
    expect(word()).toBeGreaterThanOrEqual(r.after);
  });

  it("a child that closed its own mapping still renews; its stop() clears the word at once", async () => {
    const { child, ready, word } = await holder({ closeMemory: true });
    expect(ready.word).toBeNull();
    const seen = await advances(word, 3, "the child's renewals after it closed its mapping");
    expect(seen.every((v) => v > 0)).toBe(true);
    expect((await child.request({ cmd: 'stop' })).stopped).toBe(true);
    expect(word()).toBe(0);
    await sleep(INTERVAL * 6);
    expect(word()).toBe(0);
    expect((await child.request({ cmd: 'quit' })).quit).toBe(true);
    expect(await child.exit()).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
  });
});
