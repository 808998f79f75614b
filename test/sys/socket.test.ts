import { existsSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { createConnection, type Socket as NetSocket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type SystemError } from '../../lib/index.js';
import { closeFd, EventFd, SharedMemory, UnixSocket } from '../../lib/sys/index.js';
import { MESSAGE_SIZE } from '../../lib/protocol/index.js';
import { JsonChild, killAllChildren } from '../helpers/children.js';
import { uniqueSocketPath, useTempDir } from '../helpers/paths.js';
import { waitFor } from '../helpers/wait.js';
import {
  acceptWait,
  fdCount,
  fdIsOpen,
  fdsMatching,
  idleTurns,
  nodeChild,
  recvWait,
  socketReadable,
  systemError,
  thrown,
} from './helpers.js';

const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString('latin1');
const bytesOf = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));

function indexed(k: number): Uint8Array {
  const data = new Uint8Array(8);
  const view = new DataView(data.buffer);
  view.setUint32(0, k, true);
  view.setUint32(4, 0xa5a5a5a5 ^ k, true);
  return data;
}
function indexOf(data: Uint8Array): number {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const k = view.getUint32(0, true);
  expect(view.getUint32(4, true)).toBe((0xa5a5a5a5 ^ k) >>> 0);
  return k;
}

const dir = useTempDir('sock');
const cleanups: (() => void)[] = [];
function later(fn: () => void): void {
  cleanups.push(fn);
}
/** Listens on a fresh path; closed and unlinked after the test. */
function listen(options?: { mode?: number }): { listener: UnixSocket; path: string } {
  const path = uniqueSocketPath('s', dir);
  const listener = UnixSocket.listen(path, options);
  later(() => {
    listener.close();
    if (existsSync(path)) unlinkSync(path);
  });
  return { listener, path };
}
function pair(): { client: UnixSocket; server: UnixSocket; path: string } {
  const { listener, path } = listen();
  const client = UnixSocket.connect(path);
  const server = listener.accept();
  if (server === null) throw new Error('no pending connection after connect()');
  later(() => {
    client.close();
    server.close();
  });
  return { client, server, path };
}

afterEach(async () => {
  await killAllChildren();
  for (const fn of cleanups.splice(0).reverse()) fn();
});

describe('messages and fd passing in one process', () => {
  it('20 messages alternating with and without fds arrive in order, each with exactly its own fd', () => {
    const { client, server } = pair();
    for (let k = 0; k < 20; k++) {
      if (k % 2 === 1) {
        expect(client.send(indexed(k))).toBe(true);
      } else if (k % 4 === 0) {
        // An eventfd whose counter identifies it.
        const ev = new EventFd();
        ev.signal(1000 + k);
        expect(client.send(indexed(k), ev.fd)).toBe(true);
        ev.close(); // the receiver holds its own copy
      } else {
        // A memfd whose size and contents identify it.
        const shm = SharedMemory.create({ size: 4096 * (k + 1) });
        new DataView(shm.buffer).setUint32(0, 0xc0de0000 + k, true);
        expect(client.send(indexed(k), shm.fd)).toBe(true);
        shm.close();
      }
    }
    for (let k = 0; k < 20; k++) {
      const r = server.recv();
      if (r.kind !== 'message') throw new Error(`message ${k}: got ${JSON.stringify(r)}`);
      expect(indexOf(r.data)).toBe(k);
      if (k % 2 === 1) {
        expect(r.fd).toBeNull();
      } else if (k % 4 === 0) {
        expect(r.fd).not.toBeNull();
        const ev = EventFd.adopt(r.fd!);
        expect(ev.drain()).toBe(1000 + k);
        ev.close();
      } else {
        expect(r.fd).not.toBeNull();
        const shm = SharedMemory.fromFd(r.fd!);
        expect(shm.size).toBe(4096 * (k + 1));
        expect(new DataView(shm.buffer).getUint32(0, true)).toBe(0xc0de0000 + k);
        shm.close();
      }
    }
    expect(server.recv()).toEqual({ kind: 'again' });
  });

  it('send() keeps the caller\'s fd; received fds are close-on-exec and closable with closeFd', () => {
    const { client, server } = pair();
    const ev = new EventFd();
    later(() => ev.close());
    expect(client.send(indexed(1), ev.fd)).toBe(true);
    expect(fdIsOpen(ev.fd)).toBe(true);
    const r = server.recv();
    if (r.kind !== 'message' || r.fd === null) throw new Error(`got ${JSON.stringify(r)}`);
    expect(r.fd).not.toBe(ev.fd);
    const flags = Number.parseInt(/^flags:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${r.fd}`, 'utf8'))![1]!, 8);
    expect(flags & 0o2000000).toBe(0o2000000); // O_CLOEXEC (MSG_CMSG_CLOEXEC)
    closeFd(r.fd);
    expect(fdIsOpen(r.fd)).toBe(false);
  });

  it('recv() with nothing pending is { kind: "again" }', () => {
    const { client, server } = pair();
    expect(server.recv()).toEqual({ kind: 'again' });
    expect(client.recv()).toEqual({ kind: 'again' });
    expect(MESSAGE_SIZE).toBe(8);
  });

  it('the peer closing is { kind: "eof", partial: 0 }', async () => {
    const { client, server } = pair();
    client.send(indexed(7));
    client.close();
    const r = server.recv();
    expect(r.kind).toBe('message');
    expect(await recvWait(server)).toEqual({ kind: 'eof', partial: 0 });
    expect(server.recv()).toEqual({ kind: 'eof', partial: 0 });
  });

  it('shutdown() is seen as eof by the peer', async () => {
    const { client, server } = pair();
    server.shutdown();
    expect(await recvWait(client)).toEqual({ kind: 'eof', partial: 0 });
  });

  it('sending to a closed peer is EPIPE (MSG_NOSIGNAL: no SIGPIPE)', () => {
    const { client, server } = pair();
    server.close();
    const error = systemError(() => client.send(indexed(0)));
    expect(error.code).toBe('EPIPE');
    expect(error.syscall).toBe('sendmsg');
  });

  it('send() returns false when the socket buffer is full and nothing is lost or reordered', async () => {
    const { client, server } = pair();
    let sent = 0;
    while (client.send(indexed(sent))) {
      sent += 1;
      if (sent > 1_000_000) throw new Error('the socket buffer never filled');
    }
    expect(sent).toBeGreaterThan(0);
    let received = 0;
    const take = (): void => {
      const r = server.recv();
      if (r.kind !== 'message') throw new Error(`message ${received}: got ${JSON.stringify(r)}`);
      expect(indexOf(r.data)).toBe(received);
      expect(r.fd).toBeNull();
      received += 1;
    };
    for (let i = 0; i < Math.min(sent, 64); i++) take();
    // Room again: the next message is accepted (possibly after the kernel notices the space).
    await waitFor(() => client.send(indexed(sent)), 'room in the socket buffer');
    sent += 1;
    while (received < sent) take();
    expect(server.recv()).toEqual({ kind: 'again' });
  });
});

describe('message and argument checks', () => {
  it.each([
    ['7 bytes', new Uint8Array(7), RangeError],
    ['9 bytes', new Uint8Array(9), RangeError],
    ['0 bytes', new Uint8Array(0), RangeError],
    ['an 8-byte window of a larger buffer, 9 bytes', new Uint8Array(new ArrayBuffer(32), 4, 9), RangeError],
    ['an Array', [1, 2, 3, 4, 5, 6, 7, 8], TypeError],
    ['a string', '12345678', TypeError],
    ['an Int8Array', new Int8Array(8), TypeError],
    ['a DataView', new DataView(new ArrayBuffer(8)), TypeError],
    ['an ArrayBuffer', new ArrayBuffer(8), TypeError],
    ['undefined', undefined, TypeError],
  ])('send(%s) is a %o naming data, and sends nothing', (_what, data, kind) => {
    const { client, server } = pair();
    const error = thrown(() => client.send(data as Uint8Array));
    expect(error).toBeInstanceOf(kind);
    expect((error as Error).message).toMatch(/^data/);
    expect(server.recv()).toEqual({ kind: 'again' });
  });

  it('an 8-byte window of a larger buffer sends exactly that window (a Buffer works too)', () => {
    const { client, server } = pair();
    const big = new Uint8Array(32).map((_, i) => i);
    expect(client.send(big.subarray(10, 18))).toBe(true);
    expect(client.send(Buffer.from('buffer!!'))).toBe(true);
    const r = server.recv();
    expect(r.kind === 'message' && Array.from(r.data)).toEqual([10, 11, 12, 13, 14, 15, 16, 17]);
    const b = server.recv();
    expect(b.kind === 'message' && text(b.data)).toBe('buffer!!');
  });

  it.each([
    [-1, RangeError],
    [1.5, RangeError],
    ['3', TypeError],
  ])('send(data, %s) is a %o naming fd', (fd, kind) => {
    const { client, server } = pair();
    const error = thrown(() => client.send(indexed(0), fd as number));
    expect(error).toBeInstanceOf(kind);
    expect((error as Error).message).toMatch(/^fd/);
    expect(server.recv()).toEqual({ kind: 'again' });
  });

  it('sending a closed fd is EBADF and sends nothing', () => {
    const { client, server } = pair();
    const ev = new EventFd();
    const fd = ev.fd;
    ev.close();
    const error = systemError(() => client.send(indexed(0), fd));
    expect(error.code).toBe('EBADF');
    expect(error.syscall).toBe('sendmsg');
    expect(server.recv()).toEqual({ kind: 'again' });
  });
});

describe('partial messages (raw bytes from a node:net client)', () => {
  function netClient(path: string): Promise<NetSocket> {
    return new Promise((resolve, reject) => {
      const s = createConnection(path, () => resolve(s));
      s.on('error', reject);
      later(() => s.destroy());
    });
  }

  it('3 bytes then close: eof with partial 3', async () => {
    const { listener, path } = listen();
    const raw = await netClient(path);
    const server = await acceptWait(listener);
    later(() => server.close());
    // 'finish': the 3 bytes and the FIN were handed to the kernel.
    await new Promise<void>((resolve) => raw.end(Buffer.from([1, 2, 3]), resolve));
    expect(await recvWait(server)).toEqual({ kind: 'eof', partial: 3 });
  });

  it('a message arriving in pieces is delivered whole, once', async () => {
    const { listener, path } = listen();
    const raw = await netClient(path);
    const server = await acceptWait(listener);
    later(() => server.close());
    raw.write(Buffer.from('abc'));
    await socketReadable(server, 'the first piece');
    expect(server.recv()).toEqual({ kind: 'again' });
    raw.write(Buffer.from('defghXYZ'));
    const r = await recvWait(server);
    expect(r.kind === 'message' && text(r.data)).toBe('abcdefgh');
    expect(r.kind === 'message' && r.fd).toBeNull();
    raw.end();
    expect(await recvWait(server)).toEqual({ kind: 'eof', partial: 3 });
  });
});

describe('across processes', () => {
  it('the parent sends an eventfd; the child signals it; a watcher in the parent wakes', async () => {
    const { listener, path } = listen();
    const child = nodeChild('eventfd-peer.mjs', ['receive', path]);
    const conn = await acceptWait(listener);
    later(() => conn.close());
    const ev = new EventFd();
    const counts: number[] = [];
    const watcher = ev.watch((c) => counts.push(c));
    later(() => {
      watcher.close();
      ev.close();
    });
    const data = new Uint8Array(8);
    new DataView(data.buffer).setUint32(0, 42, true);
    expect(conn.send(data, ev.fd)).toBe(true);
    await waitFor(() => counts.length > 0, 'the signal from the child');
    expect(counts).toEqual([42]);
    expect((await child.next('signalled')).count).toBe(42);
    child.send({ cmd: 'exit' });
    await child.next('done');
    expect(await child.exit()).toEqual({ code: 0, signal: null });
    await idleTurns(20);
    expect(counts).toEqual([42]);
  });

  it('the child sends its eventfd; the parent signals it; the child reports the wake-up', async () => {
    const { listener, path } = listen();
    const child = nodeChild('eventfd-peer.mjs', ['send', path]);
    const conn = await acceptWait(listener);
    later(() => conn.close());
    const r = await recvWait(conn, "the child's eventfd");
    if (r.kind !== 'message' || r.fd === null) throw new Error(`got ${JSON.stringify(r)}`);
    const ev = EventFd.adopt(r.fd);
    later(() => ev.close());
    ev.signal(17);
    expect((await child.next('woken')).count).toBe(17);
    await child.next('done');
    expect(await child.exit()).toEqual({ code: 0, signal: null });
    expect(await recvWait(conn)).toEqual({ kind: 'eof', partial: 0 });
  });
});

describe('misbehaving senders (python3 socket.send_fds)', () => {
  /** Runs a python sender against a fresh listener; returns the accepted connection after it exited. */
  async function fromPython(script: string): Promise<UnixSocket> {
    const { listener, path } = listen();
    const child = new JsonChild('python3', ['-c', `import os, socket, sys\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\ns.connect(sys.argv[1])\n${script}\ns.close()\n`, path]);
    const conn = await acceptWait(listener);
    later(() => conn.close());
    const exit = await child.exit();
    expect(exit, child.stderr).toEqual({ code: 0, signal: null });
    return conn;
  }

  it('more than one fd on one message: the receiver gets the first, the extra is closed', async () => {
    // os.eventfd(n) starts the counter at n, so each fd is recognisable. They are blocking
    // eventfds (no EFD_NONBLOCK): adopt() must make them non-blocking.
    const conn = await fromPython(
      [
        "socket.send_fds(s, [b'AAAAAAAA'], [os.eventfd(5), os.eventfd(7)])",
        "s.sendall(b'BBBBBBBB')",
        "socket.send_fds(s, [b'CCCCCCCC'], [os.eventfd(9), os.eventfd(10), os.eventfd(11)])",
      ].join('\n'),
    );
    const fds0 = fdCount();
    const eventfds0 = fdsMatching(/^anon_inode:\[eventfd\]$/);

    const a = conn.recv();
    if (a.kind !== 'message' || a.fd === null) throw new Error(`got ${JSON.stringify(a)}`);
    expect(text(a.data)).toBe('AAAAAAAA');
    // Exactly one more fd in this process: the first; the second was closed on arrival.
    expect(fdCount()).toBe(fds0 + 1);
    expect(fdsMatching(/^anon_inode:\[eventfd\]$/)).toBe(eventfds0 + 1);
    const evA = EventFd.adopt(a.fd);
    const flags = Number.parseInt(/^flags:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${a.fd}`, 'utf8'))![1]!, 8);
    expect(flags & 0o4000).toBe(0o4000); // O_NONBLOCK set by adopt()
    expect(evA.drain()).toBe(5);
    expect(evA.drain()).toBe(0);
    evA.close();
    expect(fdCount()).toBe(fds0);

    const b = conn.recv();
    expect(b.kind === 'message' && text(b.data)).toBe('BBBBBBBB');
    expect(b.kind === 'message' && b.fd).toBeNull();
    expect(fdCount()).toBe(fds0);

    const c = conn.recv();
    if (c.kind !== 'message' || c.fd === null) throw new Error(`got ${JSON.stringify(c)}`);
    expect(text(c.data)).toBe('CCCCCCCC');
    expect(fdCount()).toBe(fds0 + 1);
    const evC = EventFd.adopt(c.fd);
    expect(evC.drain()).toBe(9);
    evC.close();

    expect(conn.recv()).toEqual({ kind: 'eof', partial: 0 });
    expect(fdCount()).toBe(fds0);
  });

  it('more fds than the control buffer holds: EMSGSIZE, nothing leaks, and the framing survives', async () => {
    // 10 fds on a 3-byte first piece of message D; the rest of D follows; E carries one fd.
    const conn = await fromPython(
      [
        "socket.send_fds(s, [b'DDD'], [os.eventfd(100 + i) for i in range(10)])",
        "s.sendall(b'ddddd')",
        "socket.send_fds(s, [b'EEEEEEEE'], [os.eventfd(11)])",
      ].join('\n'),
    );
    const fds0 = fdCount();
    const error = systemError(() => conn.recv());
    expect(error.code).toBe('EMSGSIZE');
    expect(error.syscall).toBe('recvmsg');
    expect(fdCount()).toBe(fds0);

    // Either the error is sticky, or the stream goes on with its 8-byte framing intact. What
    // must not happen is a message made of the tail of D and the head of E, carrying E's fd.
    let next: ReturnType<UnixSocket['recv']> | null = null;
    try {
      next = conn.recv();
    } catch (sticky) {
      expect((sticky as SystemError).code).toBe('EMSGSIZE');
    }
    if (next !== null) {
      expect(next.kind === 'message' && text(next.data)).toBe('DDDddddd');
      expect(next.kind === 'message' && next.fd).toBeNull();
      const e = conn.recv();
      if (e.kind !== 'message' || e.fd === null) throw new Error(`got ${JSON.stringify(e)}`);
      expect(text(e.data)).toBe('EEEEEEEE');
      closeFd(e.fd);
    }
    expect(fdCount()).toBe(fds0);
  });
});

describe('listen and connect', () => {
  it('the socket file is mode 0600 by default', () => {
    const { path } = listen();
    const st = statSync(path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
  });

  it.each([0o640, 0o660, 0o666, 0o700])('honours mode %o (whatever the umask)', (mode) => {
    const { path } = listen({ mode });
    expect(statSync(path).mode & 0o777).toBe(mode);
    // And it works.
    const c = UnixSocket.connect(path);
    c.close();
  });

  it('listen on a path held by a live listener is EADDRINUSE from bind, and the listener survives', () => {
    const { listener, path } = listen();
    const error = systemError(() => UnixSocket.listen(path));
    expect(error.code).toBe('EADDRINUSE');
    expect(error.errno).toBeLessThan(0);
    expect(error.syscall).toBe('bind');
    expect(error.path).toBe(path);
    expect(error.message).toContain(path);
    // The failed call did not unlink the path: clients still reach the first listener.
    const client = UnixSocket.connect(path);
    const server = listener.accept();
    expect(server).not.toBeNull();
    client.close();
    server?.close();
  });

  it('listen on an existing regular file is EADDRINUSE and leaves the file', () => {
    const path = uniqueSocketPath('file', dir);
    writeFileSync(path, 'keep me');
    later(() => unlinkSync(path));
    expect(systemError(() => UnixSocket.listen(path)).code).toBe('EADDRINUSE');
    expect(readFileSync(path, 'utf8')).toBe('keep me');
  });

  it('connect to a missing path is ENOENT from connect', () => {
    const path = uniqueSocketPath('missing', dir);
    const error = systemError(() => UnixSocket.connect(path));
    expect(error.code).toBe('ENOENT');
    expect(error.errno).toBeLessThan(0);
    expect(error.syscall).toBe('connect');
    expect(error.path).toBe(path);
  });

  it('connect to a stale socket file (no listener) is ECONNREFUSED', () => {
    const path = uniqueSocketPath('stale', dir);
    UnixSocket.listen(path).close(); // close() does not unlink: the file stays behind
    later(() => unlinkSync(path));
    expect(statSync(path).isSocket()).toBe(true);
    const error = systemError(() => UnixSocket.connect(path));
    expect(error.code).toBe('ECONNREFUSED');
    expect(error.syscall).toBe('connect');
    expect(error.path).toBe(path);
  });

  it('a path of 107 bytes works; 108 bytes is ENAMETOOLONG for listen and connect', () => {
    const base = join(dir, 'n');
    const ok = base + 'x'.repeat(107 - Buffer.byteLength(base));
    const tooLong = `${ok}y`;
    expect(Buffer.byteLength(ok)).toBe(107);
    const listener = UnixSocket.listen(ok);
    later(() => {
      listener.close();
      unlinkSync(ok);
    });
    UnixSocket.connect(ok).close();
    for (const [fn, syscall] of [
      [() => UnixSocket.listen(tooLong), 'bind'],
      [() => UnixSocket.connect(tooLong), 'connect'],
    ] as const) {
      const error = systemError(fn);
      expect(error.code).toBe('ENAMETOOLONG');
      expect(error.syscall).toBe(syscall);
      expect(error.path).toBe(tooLong);
    }
    expect(existsSync(tooLong)).toBe(false);
  });

  it('argument checks: path, mode and backlog', () => {
    expect(thrown(() => UnixSocket.listen(''))).toBeInstanceOf(RangeError);
    expect(thrown(() => UnixSocket.connect(''))).toBeInstanceOf(RangeError);
    expect(thrown(() => UnixSocket.listen(42 as unknown as string))).toBeInstanceOf(TypeError);
    expect(thrown(() => UnixSocket.connect(null as unknown as string))).toBeInstanceOf(TypeError);
    const path = uniqueSocketPath('args', dir);
    expect(thrown(() => UnixSocket.listen(path, { mode: 0o1000 }))).toBeInstanceOf(RangeError);
    expect(thrown(() => UnixSocket.listen(path, { mode: -1 }))).toBeInstanceOf(RangeError);
    expect(thrown(() => UnixSocket.listen(path, { backlog: 0 }))).toBeInstanceOf(RangeError);
    expect(thrown(() => UnixSocket.listen(path, { backlog: '1' as unknown as number }))).toBeInstanceOf(TypeError);
    expect(existsSync(path)).toBe(false);
  });

  it('close() closes the watchers made by watch(): none keeps polling the fd number once it is reused', async () => {
    const { server } = pair();
    const early = server.watch(); // closed by its owner first: the socket's close() leaves it be
    early.close();
    const watcher = server.watch().start();
    later(() => watcher.close()); // should the test fail: before libuv re-arms a closed fd (abort)
    let readable = 0;
    let closes = 0;
    watcher.on('readable', () => readable++);
    watcher.on('close', () => closes++);
    const fd = server.fd;
    server.close();
    expect(watcher.closed).toBe(true);
    expect(watcher.active).toBe(false);
    expect(closes).toBe(1);
    // The fd number comes back for a new eventfd: signalled, it wakes only its own watcher.
    const ev = new EventFd();
    later(() => ev.close());
    expect(ev.fd).toBe(fd);
    const counts: number[] = [];
    const again = ev.watch((c) => counts.push(c));
    later(() => again.close());
    expect(again.active).toBe(true);
    ev.signal(1);
    await waitFor(() => counts.length > 0, "the new eventfd's watcher");
    await idleTurns(20);
    expect(counts).toEqual([1]);
    expect(readable).toBe(0);
    expect(closes).toBe(1);
  });

  it('accept() with nothing pending is null; the listener path getter reports the path', () => {
    const { listener, path } = listen();
    expect(listener.accept()).toBeNull();
    expect(listener.path).toBe(path);
    const client = UnixSocket.connect(path);
    later(() => client.close());
    expect(client.path).toBeNull();
  });
});
