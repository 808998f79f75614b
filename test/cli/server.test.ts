import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ivshmem, run, type CliProcess } from '../fixtures/cli/child.js';
import { killAllChildren } from '../helpers/children.js';
import { Scratch } from '../helpers/paths.js';

const scratch = new Scratch();

afterEach(async () => {
  await killAllChildren();
  scratch.cleanup();
});

/** Starts a server and waits until it says it is listening (its first line). */
async function startServer(socket: string, args: string[] = []): Promise<CliProcess> {
  const server = ivshmem(['server', '-S', socket, ...args], 'server');
  expect(await server.stdout.take()).toBe(`listening on ${socket}`);
  return server;
}

async function connectPeer(socket: string): Promise<CliProcess> {
  const peer = ivshmem(['peer', '-S', socket, '--json'], 'peer');
  await peer.event('connected');
  return peer;
}

describe('ivshmem server', () => {
  it('prints "listening on PATH" first, makes a 0600 socket, reports joins, and cleans up on SIGTERM', async () => {
    const socket = scratch.socket();
    const shm = scratch.shmName();
    const server = await startServer(socket, ['-M', shm]);
    expect(statSync(socket).isSocket()).toBe(true);
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    expect(existsSync(join('/dev/shm', shm))).toBe(true);

    const peer = await connectPeer(socket);
    await server.stdout.line('peer 0 joined');

    server.signal('SIGTERM');
    expect(await server.exit()).toEqual({ code: 0, signal: null });
    expect(server.stdout.history).toContain('peer 0 left (server-closed)');
    expect(existsSync(socket)).toBe(false);
    expect(existsSync(join('/dev/shm', shm))).toBe(false);
    await peer.event('server-lost');
  });

  it('exits 0 on SIGINT too, and reports a peer that leaves', async () => {
    const socket = scratch.socket();
    const server = await startServer(socket);
    const peer = await connectPeer(socket);
    await server.stdout.line('peer 0 joined');
    peer.send('quit');
    expect((await peer.exit()).code).toBe(0);
    await server.stdout.line('peer 0 left (disconnected)');
    server.signal('SIGINT');
    expect(await server.exit()).toEqual({ code: 0, signal: null });
    expect(existsSync(socket)).toBe(false);
  });

  it('takes the socket mode from --mode', async () => {
    const socket = scratch.socket();
    await startServer(socket, ['--mode', '660']);
    expect(statSync(socket).mode & 0o777).toBe(0o660);
  });

  it('rounds -l 5000 up to 8192 and says so on stderr', async () => {
    const socket = scratch.socket();
    const server = await startServer(socket, ['-l', '5000']);
    await server.stderr.matching(/5000 rounded up to 8192.*power of two/);
    const peer = ivshmem(['peer', '-S', socket, '--json'], 'peer');
    expect(await peer.event('connected')).toMatchObject({ size: 8192 });
    peer.send('read 8191 1');
    await peer.event('read', (e) => e.offset === 8191);
    peer.send('read 8192 1');
    await peer.event('error', (e) => /outside the shared memory \(8192 bytes\)/.test(String(e.message)));
  });

  it('--bitmask lays out the header: a bitmask peer connects, and reads the magic at byte 0', async () => {
    const socket = scratch.socket();
    await startServer(socket, ['--bitmask', '-l', '64K']);
    const peer = ivshmem(['peer', '-S', socket, '--json'], 'peer');
    await peer.event('connected');
    peer.send('read 0 8');
    // "IVSHMBM1", the header's magic (docs/header.md)
    expect(await peer.event('read')).toMatchObject({ offset: 0, hex: '495653484d424d31' });
    const { Peer } = await import('../../lib/index.js');
    const bitmaskPeer = await Peer.connect(socket, { bitmask: true });
    try {
      expect(bitmaskPeer.header).toMatchObject({ maxPeers: 64, dataOffset: 4096 });
    } finally {
      bitmaskPeer.close();
    }
  });

  it('without --bitmask a bitmask peer is refused with a HeaderError', async () => {
    const socket = scratch.socket();
    await startServer(socket, ['-l', '64K']);
    const { Peer } = await import('../../lib/index.js');
    await expect(Peer.connect(socket, { bitmask: true })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_HEADER' });
  });

  it('reports the size a peer maps in its connected event', async () => {
    const socket = scratch.socket();
    await startServer(socket, ['-l', '64K', '-n', '3']);
    const peer = ivshmem(['peer', '-S', socket, '--json'], 'peer');
    const connected = await peer.event('connected');
    expect(connected).toMatchObject({ id: 0, vectors: 3, size: 65536, peers: [] });
  });

  it('says nothing on stderr when the size is a power of two', async () => {
    const socket = scratch.socket();
    const server = await startServer(socket, ['-l', '1M']);
    await connectPeer(socket);
    await server.stdout.line('peer 0 joined');
    server.signal('SIGTERM');
    await server.exit();
    expect(server.stderr.text()).toBe('');
  });

  it.each([
    [['-l', '1.5M'], /size/],
    [['-l', 'abc'], /size/],
    [['-l', '0'], /size/],
    [['-n', '0'], /vectors/],
    [['-n', '65'], /vectors/],
    [['--mode', '999'], /mode/],
    [['--max-peers', 'x'], /max-peers/],
    [['-m', '/tmp'], /not supported/],
    [['--frobnicate'], /unknown option/],
  ])('%j exits 2 with a message', async (args, message) => {
    const socket = scratch.socket();
    const result = await run(['server', '-S', socket, ...args]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
    expect(result.stdout).toBe('');
    expect(existsSync(socket)).toBe(false);
  });

  it('exits 1 with "already listening" when a live server holds the path', async () => {
    const socket = scratch.socket();
    await startServer(socket);
    const second = await run(['server', '-S', socket]);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/already listening/);
    expect(second.stderr.trim().split('\n')).toHaveLength(1);
    expect(second.stdout).toBe('');
  });

  // The second server's liveness probe connects and closes at once. SIGSTOP makes sure the first
  // server only accepts it after it is closed, so its greeting fails (EPIPE) mid-admission; that
  // once crashed lib/network/server.ts (fixed in 5a9f3b6).
  it('the live server keeps serving after a second server probed it', async () => {
    const socket = scratch.socket();
    const first = await startServer(socket);
    first.signal('SIGSTOP');
    const second = await run(['server', '-S', socket]);
    first.signal('SIGCONT');
    expect(second.code).toBe(1);
    const peer = ivshmem(['peer', '-S', socket, '--json'], 'peer');
    await peer.event('connected', () => true, 10_000);
    expect(first.running).toBe(true);
  });

  // A client that closes its socket with messages unread makes the kernel reset the server's end
  // (ECONNRESET -> EPOLLERR, reported by libuv as a poll error); that once crashed lib/network/server.ts
  // (fixed in 5a9f3b6). A is stopped so that it cannot read B's vectors, then killed.
  it('survives a peer that dies with messages unread', async () => {
    const socket = scratch.socket();
    const server = await startServer(socket);
    const a = await connectPeer(socket);
    a.signal('SIGSTOP');
    const b = await connectPeer(socket);
    await server.stdout.line('peer 1 joined');
    a.signal('SIGKILL');
    const seen = await b.stdout.matching(/"event":"(peer-left|server-lost)"/);
    expect(JSON.parse(seen)).toEqual({ event: 'peer-left', id: 0 });
    const c = ivshmem(['peer', '-S', socket, '--json'], 'peer C');
    await c.event('connected', () => true, 10_000);
    expect(server.running).toBe(true);
  });

  it('reports every peer when several vanish at once, and keeps serving', async () => {
    const socket = scratch.socket();
    const server = await startServer(socket, ['-n', '4']);
    const peers = [await connectPeer(socket), await connectPeer(socket), await connectPeer(socket)];
    for (const id of [0, 1, 2]) await server.stdout.line(`peer ${id} joined`);
    for (const peer of peers) peer.signal('SIGKILL');
    const left: string[] = [];
    for (let i = 0; i < 3; i++) left.push((await server.stdout.matching(/^peer \d+ left \(/)).split(' ')[1]!);
    expect(left.sort()).toEqual(['0', '1', '2']);
    const late = ivshmem(['peer', '-S', socket, '--json'], 'late');
    expect(await late.event('connected')).toMatchObject({ id: 3, peers: [] });
  });

  it('replaces a stale socket file left by a killed server', async () => {
    const socket = scratch.socket();
    const killed = await startServer(socket);
    killed.signal('SIGKILL');
    expect((await killed.exit()).signal).toBe('SIGKILL');
    expect(statSync(socket).isSocket()).toBe(true);

    const server = await startServer(socket);
    await connectPeer(socket);
    await server.stdout.line('peer 0 joined');
    server.signal('SIGTERM');
    expect((await server.exit()).code).toBe(0);
    expect(existsSync(socket)).toBe(false);
  });

  it('refuses to replace a path that is not a socket', async () => {
    const socket = scratch.socket();
    writeFileSync(socket, 'not a socket');
    const result = await run(['server', '-S', socket]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/not a socket/);
    expect(readFileSync(socket, 'utf8')).toBe('not a socket');
  });

  it('exits 1 when the named shm exists already, leaving it alone', async () => {
    const shm = scratch.shmName();
    writeFileSync(join('/dev/shm', shm), '');
    const socket = scratch.socket();
    const result = await run(['server', '-S', socket, '-M', shm]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/EEXIST/);
    expect(existsSync(join('/dev/shm', shm))).toBe(true);
    expect(existsSync(socket)).toBe(false);
  });

  it('writes the pid file once listening and removes it on exit', async () => {
    const socket = scratch.socket();
    const pidFile = scratch.path('pid');
    const server = await startServer(socket, ['-p', pidFile, '-F']);
    expect(readFileSync(pidFile, 'utf8').trim()).toBe(String(server.pid));
    server.signal('SIGTERM');
    expect((await server.exit()).code).toBe(0);
    expect(existsSync(pidFile)).toBe(false);
  });

  it('with -v reports refused peers on stderr (--max-peers)', async () => {
    const socket = scratch.socket();
    const server = await startServer(socket, ['-v', '--max-peers', '1']);
    await connectPeer(socket);
    await server.stdout.line('peer 0 joined');
    const refused = await run(['peer', '-S', socket, '--json']);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toMatch(/"event":"error"/);
    await server.stderr.matching(/refused a peer: 1 peers connected, the maximum is 1/);
  });
});
