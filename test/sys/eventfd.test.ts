import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../lib/sys/binding.js';
import { EventFd, FdWatcher, SharedMemory } from '../../lib/sys/index.js';
import { useTempDir } from '../helpers/paths.js';
import { waitFor } from '../helpers/wait.js';
import { fdIsOpen, fdTarget, idleTurns, systemError, thrown } from './helpers.js';

const closers: { close(): void }[] = [];
function own<T extends { close(): void }>(resource: T): T {
  closers.push(resource);
  return resource;
}

const dir = useTempDir('efd');
afterEach(() => {
  // Watchers were pushed after their eventfds: close in reverse, watchers first.
  for (const r of closers.splice(0).reverse()) r.close();
});

describe('signal and drain', () => {
  it('drain returns the sum of the signals since the last drain, 0 when none', () => {
    const ev = own(new EventFd());
    expect(fdTarget(ev.fd)).toBe('anon_inode:[eventfd]');
    expect(ev.drain()).toBe(0);
    ev.signal();
    expect(ev.drain()).toBe(1);
    expect(ev.drain()).toBe(0);
    ev.signal(3);
    ev.signal(3);
    ev.signal();
    expect(ev.drain()).toBe(7);
    expect(ev.drain()).toBe(0);
    ev.signal(2 ** 53 - 1);
    expect(ev.drain()).toBe(2 ** 53 - 1);
  });

  it('the fd is non-blocking and close-on-exec', () => {
    const ev = own(new EventFd());
    const flags = Number.parseInt(/^flags:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${ev.fd}`, 'utf8'))![1]!, 8);
    expect(flags & constants.O_NONBLOCK).toBe(constants.O_NONBLOCK);
    expect(flags & 0o2000000).toBe(0o2000000); // O_CLOEXEC
  });

  it('signalling past the counter maximum is EAGAIN from write; draining recovers', () => {
    const ev = own(new EventFd());
    // 2048 * (2^53 - 1) = 2^64 - 2048 fits under the kernel's maximum 2^64 - 2; one more does not.
    for (let i = 0; i < 2048; i++) ev.signal(2 ** 53 - 1);
    const error = systemError(() => ev.signal(2 ** 53 - 1));
    expect(error.code).toBe('EAGAIN');
    expect(error.syscall).toBe('write');
    expect(error.errno).toBeLessThan(0);
    expect(error.message).toContain(`fd ${ev.fd}`);
    expect(ev.drain()).toBeGreaterThan(2 ** 63);
    expect(ev.drain()).toBe(0);
    ev.signal(1);
    expect(ev.drain()).toBe(1);
  });

  it.each([
    ['0', 0, RangeError],
    ['-1', -1, RangeError],
    ['1.5', 1.5, RangeError],
    ['NaN', Number.NaN, RangeError],
    ['2**53 (not exact in a double)', 2 ** 53, RangeError],
    ["'1'", '1', TypeError],
    ['null', null, TypeError],
    ['1n', 1n, TypeError],
  ])('signal(%s) is a %o naming count, and adds nothing', (_what, count, kind) => {
    const ev = own(new EventFd());
    const error = thrown(() => ev.signal(count as number));
    expect(error).toBeInstanceOf(kind);
    expect((error as Error).message).toMatch(/^count/);
    expect(ev.drain()).toBe(0);
  });
});

describe('EventFd.adopt', () => {
  it('adopts a real eventfd (a duplicate shares the counter) and takes ownership', () => {
    const ev = own(new EventFd());
    const raw = native.dupFd(ev.fd);
    const adopted = EventFd.adopt(raw);
    expect(adopted.fd).toBe(raw);
    adopted.signal(5);
    expect(ev.drain()).toBe(5);
    ev.signal(6);
    expect(adopted.drain()).toBe(6);
    adopted.close();
    expect(fdIsOpen(raw)).toBe(false);
    expect(fdIsOpen(ev.fd)).toBe(true);
  });

  it('an unknown fd is EBADF', () => {
    const error = systemError(() => EventFd.adopt(987654));
    expect(error.code).toBe('EBADF');
    expect(error.errno).toBeLessThan(0);
    expect(error.syscall).toBe('fcntl');
    expect(error.message).toContain('fd 987654');
  });

  it('a closed fd is EBADF', () => {
    const ev = new EventFd();
    const fd = ev.fd;
    ev.close();
    const error = systemError(() => EventFd.adopt(fd));
    expect(error.code).toBe('EBADF');
    expect(error.syscall).toBe('fcntl');
  });

  function expectNotEventFd(fd: number): void {
    const error = systemError(() => EventFd.adopt(fd));
    expect(error.code).toBe('EINVAL');
    expect(error.errno).toBeLessThan(0);
    expect(error.syscall).toBe('eventfd');
    expect(error.message).toContain('is not an eventfd');
    expect(error.message).toContain(`fd ${fd}`);
    // Ownership was taken: the rejected fd has been closed.
    expect(fdIsOpen(fd)).toBe(false);
  }

  it("a pipe is EINVAL 'is not an eventfd'", () => {
    const fifo = join(dir, `fifo-${process.pid}`);
    execFileSync('mkfifo', [fifo]);
    const fd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
    expect(fdTarget(fd)).toMatch(/^pipe:|fifo/);
    expectNotEventFd(fd);
  });

  it("a memfd is EINVAL 'is not an eventfd'", () => {
    const shm = own(SharedMemory.create({ size: 4096 }));
    expectNotEventFd(native.dupFd(shm.fd));
    expectNotEventFd(native.memfdCreate('not-an-eventfd'));
    expect(fdIsOpen(shm.fd)).toBe(true);
  });

  it("a regular file is EINVAL 'is not an eventfd'", () => {
    const fd = openSync('/dev/null', 'r');
    try {
      expectNotEventFd(fd);
    } finally {
      if (fdIsOpen(fd)) closeSync(fd);
    }
  });

  it.each([
    [-1, RangeError],
    [1.5, RangeError],
    [2 ** 31, RangeError],
    ['3', TypeError],
  ])('adopt(%s) is a %o naming fd', (fd, kind) => {
    const error = thrown(() => EventFd.adopt(fd as number));
    expect(error).toBeInstanceOf(kind);
    expect((error as Error).message).toMatch(/^fd/);
  });
});

describe('watching an eventfd', () => {
  it('fires once per burst of signals and does not spin after the drain', async () => {
    const ev = own(new EventFd());
    const counts: number[] = [];
    const watcher = own(ev.watch((count) => counts.push(count)));
    let readable = 0;
    watcher.on('readable', () => {
      readable += 1;
    });
    expect(watcher.active).toBe(true);
    for (let i = 0; i < 100; i++) ev.signal();
    await waitFor(() => counts.length > 0, 'the watch callback');
    expect(counts).toEqual([100]);
    expect(readable).toBe(1);

    // Level-triggered poll, but drained: no further readiness however long the loop runs.
    const turns = await idleTurns(200);
    expect(turns).toBeGreaterThan(10);
    expect(readable).toBe(1);
    expect(counts).toEqual([100]);

    // The next burst is again exactly one callback.
    ev.signal(2);
    ev.signal(3);
    await waitFor(() => counts.length > 1, 'the second callback');
    await idleTurns(50);
    expect(counts).toEqual([100, 5]);
    expect(readable).toBe(2);
  });

  it('control: a listener that does not drain sees readiness on every loop turn (what the drain prevents)', async () => {
    const ev = own(new EventFd());
    const watcher = own(new FdWatcher(ev.fd));
    let readable = 0;
    watcher.on('readable', () => {
      readable += 1;
    });
    watcher.start();
    ev.signal();
    await waitFor(() => readable > 0, 'readiness');
    await idleTurns(50);
    expect(readable).toBeGreaterThan(3);
    watcher.stop();
    const stopped = readable;
    await idleTurns(50);
    expect(readable).toBe(stopped);
    expect(ev.drain()).toBe(1);
  });

  it('stop() pauses and start() resumes delivery', async () => {
    const ev = own(new EventFd());
    const counts: number[] = [];
    const watcher = own(ev.watch((c) => counts.push(c)));
    watcher.stop();
    expect(watcher.active).toBe(false);
    ev.signal(4);
    await idleTurns(50);
    expect(counts).toEqual([]);
    watcher.start();
    watcher.start(); // idempotent
    expect(watcher.active).toBe(true);
    await waitFor(() => counts.length > 0, 'the callback after start()');
    expect(counts).toEqual([4]);
  });

  it('closing the watcher from inside its listener is safe and ends delivery', async () => {
    const ev = own(new EventFd());
    const counts: number[] = [];
    let closes = 0;
    const watcher: FdWatcher = own(
      ev.watch((c) => {
        counts.push(c);
        watcher.close();
      }),
    );
    watcher.on('close', () => {
      closes += 1;
    });
    ev.signal(1);
    await waitFor(() => counts.length > 0, 'the callback');
    expect(watcher.closed).toBe(true);
    expect(closes).toBe(1);
    ev.signal(1);
    await idleTurns(50);
    expect(counts).toEqual([1]);
    expect(ev.drain()).toBe(1);
  });

  it('closing the watcher before its eventfd frees the fd number for a new watcher', () => {
    // The documented order (watcher first): libuv keeps a per-fd slot until the poll handle
    // is closed, so a reused fd number can be watched again only after that.
    const first = new EventFd();
    const fd = first.fd;
    const watcher = first.watch(() => {});
    watcher.close();
    first.close();
    const second = own(new EventFd());
    expect(second.fd).toBe(fd);
    const again = own(second.watch(() => {}));
    expect(again.active).toBe(true);
  });

  it('a second watcher on an fd that already has an active one is EEXIST from uv_poll_init', () => {
    const ev = own(new EventFd());
    own(new FdWatcher(ev.fd).start());
    const error = systemError(() => new FdWatcher(ev.fd));
    expect(error.code).toBe('EEXIST');
    expect(error.syscall).toBe('uv_poll_init');
  });

  it('watch() needs a function', () => {
    const ev = own(new EventFd());
    expect(thrown(() => ev.watch(42 as unknown as () => void))).toBeInstanceOf(TypeError);
  });

  it('an FdWatcher rejects invalid fds', () => {
    expect(thrown(() => new FdWatcher(-1))).toBeInstanceOf(RangeError);
    expect(thrown(() => new FdWatcher('3' as unknown as number))).toBeInstanceOf(TypeError);
    const error = systemError(() => new FdWatcher(987654));
    expect(error.code).toBe('EBADF');
    expect(error.syscall).toBe('uv_poll_init');
  });
});

describe('FdWatcher async iterator', () => {
  it('yields once per readiness, stays stopped while the consumer works, and ends on close()', async () => {
    const ev = own(new EventFd());
    const watcher = own(new FdWatcher(ev.fd));
    const seen: number[] = [];
    const activeInBody: boolean[] = [];
    const loop = (async () => {
      for await (const _ of watcher) {
        activeInBody.push(watcher.active);
        seen.push(ev.drain());
      }
      return 'ended';
    })();

    ev.signal(5);
    await waitFor(() => seen.length === 1, 'the first step');
    await idleTurns(100);
    expect(seen).toEqual([5]);

    ev.signal(7);
    await waitFor(() => seen.length === 2, 'the second step');
    ev.signal(2);
    ev.signal(2);
    await waitFor(() => seen.length === 3, 'the third step');
    await idleTurns(50);
    expect(seen).toEqual([5, 7, 4]);
    // While the consumer's body runs, the poll is stopped (no spinning on a level-triggered fd).
    expect(activeInBody).toEqual([false, false, false]);

    watcher.close();
    await expect(loop).resolves.toBe('ended');
    expect(seen).toEqual([5, 7, 4]);
  });

  it('a consumer that does not drain gets the next step at once, one step at a time', async () => {
    const ev = own(new EventFd());
    const watcher = own(new FdWatcher(ev.fd));
    let steps = 0;
    let readable = 0;
    watcher.on('readable', () => {
      readable += 1;
    });
    ev.signal(1);
    for await (const _ of watcher) {
      steps += 1;
      await idleTurns(20);
      // One readiness per step: the poll is stopped while the body runs.
      expect(readable).toBe(steps);
      if (steps === 3) watcher.close();
    }
    expect(steps).toBe(3);
    expect(ev.drain()).toBe(1);
  });

  it('ends when closed from inside the body', async () => {
    const ev = own(new EventFd());
    const watcher = own(new FdWatcher(ev.fd));
    ev.signal(1);
    let steps = 0;
    for await (const _ of watcher) {
      steps += 1;
      ev.drain();
      watcher.close();
    }
    expect(steps).toBe(1);
    expect(watcher.closed).toBe(true);
  });

  it('ends at once on a watcher closed before iterating', async () => {
    const ev = own(new EventFd());
    const watcher = new FdWatcher(ev.fd);
    watcher.close();
    const iterate = async (): Promise<number> => {
      let steps = 0;
      for await (const _ of watcher) steps += 1;
      return steps;
    };
    // start() on a closed watcher throws ClosedError from inside the generator.
    await expect(iterate()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CLOSED' });
  });
});
