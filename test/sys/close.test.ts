import { unlinkSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ClosedError, ErrorCodes, isClosedError, isIvshmemError } from '../../lib/index.js';
import { EventFd, FdWatcher, SharedMemory, UnixSocket } from '../../lib/sys/index.js';
import { uniqueShmName, uniqueSocketPath, useTempDir } from '../helpers/paths.js';
import { fdIsOpen, mapsMatching, thrown } from './helpers.js';

/** `fn` must throw the package's ClosedError (checked by class, guard and code). */
function expectClosed(fn: () => unknown, what: string): void {
  const error = thrown(fn);
  expect(error).toBeInstanceOf(ClosedError);
  expect(isClosedError(error)).toBe(true);
  expect(isIvshmemError(error)).toBe(true);
  expect((error as ClosedError).code).toBe('ERR_IVSHMEM_CLOSED');
  expect((error as ClosedError).code).toBe(ErrorCodes.CLOSED);
  expect((error as Error).message).toBe(`${what} is closed`);
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const dir = useTempDir('close');
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const fn of cleanups.splice(0).reverse()) fn();
});

/** A listening socket plus both ends of one connection, cleaned up after the test. */
function socketTrio(): { listener: UnixSocket; client: UnixSocket; server: UnixSocket; path: string } {
  const path = uniqueSocketPath('s', dir);
  const listener = UnixSocket.listen(path);
  const client = UnixSocket.connect(path);
  const server = listener.accept();
  if (server === null) throw new Error('no pending connection after connect()');
  cleanups.push(() => {
    client.close();
    server.close();
    listener.close();
    unlinkSync(path);
  });
  return { listener, client, server, path };
}

describe('SharedMemory.close() detaches the mapping', () => {
  it('views made before close() become empty, read as undefined and do not crash', () => {
    const name = uniqueShmName('detach');
    const shm = SharedMemory.create({ name, size: 8192 });
    cleanups.push(() => shm.close());
    shm.unlink();
    const buffer = shm.buffer;
    const u8 = shm.bytes();
    const window = shm.bytes(100, 16);
    const dv = new DataView(shm.buffer);
    const i32 = new Int32Array(shm.buffer);
    u8[0] = 17;
    dv.setUint32(4, 0xdeadbeef);
    Atomics.store(i32, 2, 99);
    expect(dv.getUint8(0)).toBe(17);
    expect(mapsMatching(new RegExp(escapeRe(`/dev/shm${name}`)))).toBe(1);
    const fd = shm.fd;

    shm.close();

    expect(shm.closed).toBe(true);
    // Unmapped and closed at once, although views still exist.
    expect(mapsMatching(new RegExp(escapeRe(`/dev/shm${name}`)))).toBe(0);
    expect(fdIsOpen(fd)).toBe(false);
    expect(buffer.byteLength).toBe(0);
    for (const view of [u8, window, i32]) {
      expect(view.length).toBe(0);
      expect(view.byteLength).toBe(0);
      expect(view.byteOffset).toBe(0);
      expect(view[0]).toBeUndefined();
      expect(view[1000]).toBeUndefined();
    }
    // Writes to a detached view are silently dropped.
    u8[0] = 5;
    i32[1] = 5;
    expect(u8[0]).toBeUndefined();
    expect(i32[1]).toBeUndefined();
    // Iterating a detached view is a TypeError (ECMAScript ValidateTypedArray), not a crash.
    expect(() => Array.from(u8)).toThrow(TypeError);
    // A DataView on a detached buffer throws a TypeError even for byteLength (ECMAScript
    // IsViewOutOfBounds), rather than reporting 0: still a JS error, not a crash.
    expect(() => dv.byteLength).toThrow(TypeError);
    expect(() => dv.getUint8(0)).toThrow(TypeError);
    expect(() => dv.setUint8(0, 1)).toThrow(TypeError);
    // Atomics on an old Int32Array: a JS TypeError, not a fault.
    expect(() => Atomics.load(i32, 0)).toThrow(TypeError);
    expect(() => Atomics.store(i32, 0, 1)).toThrow(TypeError);
    expect(() => Atomics.add(i32, 0, 1)).toThrow(TypeError);
  });

  it('buffer, bytes() and fd after close() throw ClosedError; size, name and unlink still work', () => {
    const name = uniqueShmName('after');
    const shm = SharedMemory.create({ name, size: 4096 });
    let unlinked = false;
    cleanups.push(() => {
      if (!unlinked) SharedMemory.unlink(name);
    });
    shm.close();
    expectClosed(() => shm.buffer, 'SharedMemory');
    expectClosed(() => shm.bytes(), 'SharedMemory');
    expectClosed(() => shm.bytes(0, 1), 'SharedMemory');
    expectClosed(() => shm.fd, 'SharedMemory');
    expect(shm.size).toBe(4096);
    expect(shm.name).toBe(name);
    shm.unlink(); // the name is not the mapping: removing it after close is fine
    unlinked = true;
  });

  it('a memfd region closes the same way', () => {
    const shm = SharedMemory.create({ size: 4096 });
    const u8 = shm.bytes();
    u8[0] = 1;
    const before = mapsMatching(/\/memfd:ivshmem/);
    shm.close();
    expect(mapsMatching(/\/memfd:ivshmem/)).toBe(before - 1);
    expect(u8.length).toBe(0);
    expectClosed(() => shm.buffer, 'SharedMemory');
  });
});

describe('double close is harmless', () => {
  it('SharedMemory', () => {
    const shm = SharedMemory.create({ size: 4096 });
    shm.close();
    shm.close();
    shm[Symbol.dispose]();
    expect(shm.closed).toBe(true);
  });

  it('EventFd', () => {
    const ev = new EventFd();
    const fd = ev.fd;
    ev.close();
    expect(fdIsOpen(fd)).toBe(false);
    // A second close must not close whatever now has that fd number.
    const other = new EventFd();
    cleanups.push(() => other.close());
    ev.close();
    ev[Symbol.dispose]();
    expect(ev.closed).toBe(true);
    other.signal(2);
    expect(other.drain()).toBe(2);
  });

  it('FdWatcher (and "close" is emitted once)', () => {
    const ev = new EventFd();
    cleanups.push(() => ev.close());
    const watcher = new FdWatcher(ev.fd).start();
    let closes = 0;
    watcher.on('close', () => {
      closes += 1;
    });
    watcher.close();
    watcher.close();
    watcher[Symbol.dispose]();
    expect(watcher.closed).toBe(true);
    expect(closes).toBe(1);
  });

  it('UnixSocket (listener and both ends)', () => {
    const { listener, client, server } = socketTrio();
    for (const s of [client, server, listener]) {
      s.close();
      s.close();
      s[Symbol.dispose]();
      expect(s.closed).toBe(true);
    }
  });
});

describe('use after close throws ClosedError', () => {
  it('EventFd: signal, drain, fd, watch', () => {
    const ev = new EventFd();
    ev.close();
    expectClosed(() => ev.signal(), 'EventFd');
    expectClosed(() => ev.signal(3), 'EventFd');
    expectClosed(() => ev.drain(), 'EventFd');
    expectClosed(() => ev.fd, 'EventFd');
    expectClosed(() => ev.watch(() => {}), 'EventFd');
  });

  it('FdWatcher: start, stop, ref, unref; hasRef() and active are false', () => {
    const ev = new EventFd();
    cleanups.push(() => ev.close());
    const watcher = new FdWatcher(ev.fd).start();
    expect(watcher.active).toBe(true);
    expect(watcher.hasRef()).toBe(true);
    watcher.close();
    expectClosed(() => watcher.start(), 'FdWatcher');
    expectClosed(() => watcher.stop(), 'FdWatcher');
    expectClosed(() => watcher.ref(), 'FdWatcher');
    expectClosed(() => watcher.unref(), 'FdWatcher');
    expect(watcher.hasRef()).toBe(false);
    expect(watcher.active).toBe(false);
    expect(watcher.fd).toBe(ev.fd);
  });

  it('UnixSocket: accept, send, recv, shutdown, fd, watch', () => {
    const { listener, client, server } = socketTrio();
    const message = new Uint8Array(8);
    for (const s of [listener, client, server]) {
      s.close();
      expectClosed(() => s.accept(), 'UnixSocket');
      expectClosed(() => s.send(message), 'UnixSocket');
      expectClosed(() => s.recv(), 'UnixSocket');
      expectClosed(() => s.shutdown(), 'UnixSocket');
      expectClosed(() => s.fd, 'UnixSocket');
      expectClosed(() => s.watch(), 'UnixSocket');
    }
    expect(listener.path).not.toBeNull();
  });
});

describe('[Symbol.dispose] with `using`', () => {
  // vitest 4's transform lowers `using` for Node 20, so these run as written.
  it('closes every wrapper at the end of the block, in reverse order', () => {
    const path = uniqueSocketPath('s', dir);
    cleanups.push(() => unlinkSync(path));
    const order: string[] = [];
    let shm: SharedMemory;
    let ev: EventFd;
    let watcher: FdWatcher;
    let listener: UnixSocket;
    let client: UnixSocket;
    {
      using s = SharedMemory.create({ size: 4096 });
      using e = new EventFd();
      using w = new FdWatcher(e.fd).start();
      using l = UnixSocket.listen(path);
      using c = UnixSocket.connect(path);
      w.on('close', () => order.push(`watcher closed; eventfd closed: ${e.closed}`));
      [shm, ev, watcher, listener, client] = [s, e, w, l, c];
      expect([s.closed, e.closed, w.closed, l.closed, c.closed]).toEqual([false, false, false, false, false]);
    }
    expect([shm.closed, ev.closed, watcher.closed, listener.closed, client.closed]).toEqual([true, true, true, true, true]);
    // Declared after the eventfd, the watcher is disposed before it: the safe order.
    expect(order).toEqual(['watcher closed; eventfd closed: false']);
    expectClosed(() => shm.buffer, 'SharedMemory');
  });

  it('closes when the block throws', () => {
    let ev: EventFd | undefined;
    expect(() => {
      using e = new EventFd();
      ev = e;
      throw new Error('boom');
    }).toThrow('boom');
    expect(ev?.closed).toBe(true);
  });
});
