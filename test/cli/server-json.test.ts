/**
 * `ivshmem server --json` (one JSON object per event on stdout) and `-M NAME` over a named
 * object left behind by a server that died: reused with a note on stderr (or replaced with
 * --force), never one a live server on the socket still serves.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ivshmem, run, type CliProcess, type JsonEvent } from '../fixtures/cli/child.js';
import { killAllChildren } from '../helpers/children.js';
import { Scratch } from '../helpers/paths.js';
import { SharedMemory } from '../../lib/sys/index.js';

const scratch = new Scratch();
const shmNames: string[] = [];

afterEach(async () => {
  await killAllChildren();
  for (const name of shmNames.splice(0)) {
    try {
      SharedMemory.unlink(name);
    } catch {
      // removed by the server already
    }
  }
  scratch.cleanup();
});

/** A shm name for the CLI (no leading '/'), unlinked after the test whatever happens. */
function shmName(): string {
  const name = scratch.shmName();
  shmNames.push(name);
  return name;
}

/** Every stdout line parsed: in --json mode each one must be a JSON object. */
function events(proc: CliProcess): JsonEvent[] {
  return proc.stdout.history.filter((line) => line !== '').map((line) => JSON.parse(line) as JsonEvent);
}

async function startJsonServer(socket: string, args: string[] = []): Promise<{ server: CliProcess; listening: JsonEvent }> {
  const server = ivshmem(['server', '--json', '-S', socket, ...args], 'server');
  const listening = await server.event('listening');
  return { server, listening };
}

async function connectPeer(socket: string, label = 'peer'): Promise<CliProcess> {
  const peer = ivshmem(['peer', '-S', socket, '--json'], label);
  await peer.event('connected');
  return peer;
}

/** A named object as a dead server leaves it: created, `fill`ed, closed, not unlinked. */
function leaveBehind(name: string, size: number, fill: (shm: SharedMemory) => void = () => {}): void {
  const shm = SharedMemory.create({ name, size });
  try {
    fill(shm);
  } finally {
    shm.close();
  }
}

describe('ivshmem server --json', () => {
  it('prints listening, a join, a leave with its reason, and closed on SIGTERM, each one JSON object a line', async () => {
    const socket = scratch.socket();
    const { server, listening } = await startJsonServer(socket, ['-l', '64K', '-n', '2']);
    expect(listening).toEqual({
      event: 'listening',
      socket,
      size: 65536,
      vectors: 2,
      maxPeers: 64,
      bitmask: false,
      shm: null,
      dataOffset: 0,
    });
    const peer = await connectPeer(socket);
    expect(await server.event('peer-joined')).toEqual({ event: 'peer-joined', id: 0, vectors: 2 });
    peer.send('quit');
    expect((await peer.exit()).code).toBe(0);
    expect(await server.event('peer-left')).toEqual({ event: 'peer-left', id: 0, vectors: 2, reason: 'disconnected' });

    const second = await connectPeer(socket, 'second');
    await server.event('peer-joined', (e) => e.id === 1);
    server.signal('SIGTERM');
    expect(await server.exit()).toEqual({ code: 0, signal: null });
    expect(events(server)).toEqual([
      listening,
      { event: 'peer-joined', id: 0, vectors: 2 },
      { event: 'peer-left', id: 0, vectors: 2, reason: 'disconnected' },
      { event: 'peer-joined', id: 1, vectors: 2 },
      { event: 'peer-left', id: 1, vectors: 2, reason: 'server-closed' },
      { event: 'closed' },
    ]);
    expect(server.stderr.text()).toBe('');
    expect(existsSync(socket)).toBe(false);
    await second.event('server-lost');
  });

  it('names the shm, the bitmask header and its data offset in listening; closed on SIGINT too', async () => {
    const socket = scratch.socket();
    const shm = shmName();
    const { server, listening } = await startJsonServer(socket, ['-M', shm, '--bitmask', '--max-peers', '8', '-l', '1M']);
    expect(listening).toEqual({
      event: 'listening',
      socket,
      size: 1 << 20,
      vectors: 1,
      maxPeers: 8,
      bitmask: true,
      shm: `/${shm}`,
      dataOffset: 4096,
    });
    server.signal('SIGINT');
    expect(await server.exit()).toEqual({ code: 0, signal: null });
    expect(events(server)).toEqual([listening, { event: 'closed' }]);
    expect(existsSync(join('/dev/shm', shm))).toBe(false);
  });

  it('reports a refused peer without -v (--max-peers 1 and a second client)', async () => {
    const socket = scratch.socket();
    const { server } = await startJsonServer(socket, ['--max-peers', '1']);
    await connectPeer(socket);
    await server.event('peer-joined');
    const refused = await run(['peer', '-S', socket, '--json']);
    expect(refused.code).toBe(1);
    expect(await server.event('peer-refused')).toEqual({ event: 'peer-refused', reason: '1 peers connected, the maximum is 1' });
    expect(server.stderr.text()).toBe('');
  });

  it('a start failure is an error event on stdout and exit status 1', async () => {
    const socket = scratch.socket();
    await startJsonServer(socket);
    const second = await run(['server', '--json', '-S', socket]);
    expect(second.code).toBe(1);
    const lines = second.stdout.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    const error = JSON.parse(lines[0]!) as JsonEvent;
    expect(error.event).toBe('error');
    expect(error.message).toMatch(/a server is already listening on /);
    expect(Object.keys(error)).toEqual(['event', 'message']);
    expect(second.stderr).toMatch(/already listening/);
  });

  it('without --json the text output is as before: lines, no JSON, refusals only with -v', async () => {
    const socket = scratch.socket();
    const server = ivshmem(['server', '-S', socket, '--max-peers', '1'], 'server');
    await server.stdout.line(`listening on ${socket}`);
    const peer = await connectPeer(socket);
    await server.stdout.line('peer 0 joined');
    expect((await run(['peer', '-S', socket, '--json'])).code).toBe(1);
    peer.send('quit');
    await peer.exit();
    await server.stdout.line('peer 0 left (disconnected)');
    server.signal('SIGTERM');
    expect((await server.exit()).code).toBe(0);
    expect(server.stdout.history).toEqual([`listening on ${socket}`, 'peer 0 joined', 'peer 0 left (disconnected)']);
    expect(server.stderr.text()).toBe('');
  });
});

describe('ivshmem server -M NAME over a leftover object', () => {
  it('reuses an object left behind, says so on stderr, grows it; a peer sees its size and old contents', async () => {
    const shm = shmName();
    leaveBehind(`/${shm}`, 8192, (m) => m.bytes().set([0xca, 0xfe], 100));
    const socket = scratch.socket();
    const server = ivshmem(['server', '-S', socket, '-M', shm, '-l', '64K'], 'server');
    await server.stdout.line(`listening on ${socket}`);
    await server.stderr.line(
      `reusing the shared memory object /${shm} left by an earlier server (8192 bytes), grown to 65536 bytes`,
    );
    const peer = ivshmem(['peer', '-S', socket, '--json'], 'peer');
    expect(await peer.event('connected')).toMatchObject({ id: 0, size: 65536 });
    peer.send('read 100 2');
    expect(await peer.event('read')).toMatchObject({ offset: 100, hex: 'cafe' });
    server.signal('SIGTERM');
    expect((await server.exit()).code).toBe(0);
    expect(server.stderr.history.filter((l) => l !== '')).toHaveLength(1);
    expect(existsSync(join('/dev/shm', shm))).toBe(false); // removed on exit, as one it created
  });

  it('keeps a larger leftover at its size, and says so', async () => {
    const shm = shmName();
    leaveBehind(`/${shm}`, 1 << 20);
    const socket = scratch.socket();
    const { server, listening } = await startJsonServer(socket, ['-M', shm, '-l', '64K']);
    expect(listening).toMatchObject({ size: 1 << 20, shm: `/${shm}` });
    await server.stderr.line(
      `reusing the shared memory object /${shm} left by an earlier server (1048576 bytes); kept at 1048576 bytes, more than the 65536 asked for (it is never shrunk: --force replaces it by a new one)`,
    );
    const peer = ivshmem(['peer', '-S', socket, '--json'], 'peer');
    expect(await peer.event('connected')).toMatchObject({ size: 1 << 20 });
  });

  it('--bitmask over the memory of a server killed with SIGKILL: a fresh header, none of the old bits', async () => {
    const shm = shmName();
    const socket = scratch.socket();
    const { server: first } = await startJsonServer(socket, ['-M', shm, '--bitmask', '-l', '64K']);
    const { Peer } = await import('../../lib/index.js');
    const old = await Peer.connect(socket, { bitmask: true });
    await first.event('peer-joined');
    // Bits a dead server's peers left: pending for 5 and 7, live for 3 (and its peer 0).
    const header = old.header!;
    const words = new BigUint64Array(old.shm.buffer);
    words[header.pendingOffset / 8] = 0xa0n;
    words[header.liveOffset / 8] = words[header.liveOffset / 8]! | 0x8n;
    old.shm.bytes().set([1, 2, 3], header.dataOffset + 8);
    first.signal('SIGKILL');
    expect((await first.exit()).signal).toBe('SIGKILL');
    old.close();
    expect(statSync(socket).isSocket()).toBe(true); // stale
    expect(existsSync(join('/dev/shm', shm))).toBe(true);

    const { server } = await startJsonServer(socket, ['-M', shm, '--bitmask', '-l', '64K']);
    await server.stderr.line(`reusing the shared memory object /${shm} left by an earlier server (65536 bytes)`);
    const peer = await Peer.connect(socket, { bitmask: true });
    try {
      expect(peer.id).toBe(0);
      const view = new DataView(peer.shm.buffer);
      expect(view.getBigUint64(header.pendingOffset, true)).toBe(0n);
      expect(view.getBigUint64(header.liveOffset, true)).toBe(1n);
      expect([...peer.shm.bytes(header.dataOffset + 8, 3)]).toEqual([1, 2, 3]);
    } finally {
      peer.close();
    }
  });

  it('--force replaces the leftover by a new, zeroed object of the requested size', async () => {
    const shm = shmName();
    leaveBehind(`/${shm}`, 1 << 20, (m) => m.bytes().fill(0xee, 0, 16));
    const socket = scratch.socket();
    const server = ivshmem(['server', '-S', socket, '-M', shm, '-l', '64K', '--force'], 'server');
    await server.stdout.line(`listening on ${socket}`);
    await server.stderr.line(
      `replaced the shared memory object /${shm} left by an earlier server (1048576 bytes) by a new one of 65536 bytes (--force)`,
    );
    const peer = ivshmem(['peer', '-S', socket, '--json'], 'peer');
    expect(await peer.event('connected')).toMatchObject({ size: 65536 });
    peer.send('read 0 16');
    expect(await peer.event('read')).toMatchObject({ offset: 0, hex: '00'.repeat(16) });
  });

  it('says nothing when there is no leftover (-M, --force or not)', async () => {
    for (const extra of [[], ['--force']]) {
      const shm = shmName();
      const socket = scratch.socket();
      const server = ivshmem(['server', '-S', socket, '-M', shm, '-l', '64K', ...extra], 'server');
      await server.stdout.line(`listening on ${socket}`);
      await connectPeer(socket);
      await server.stdout.line('peer 0 joined');
      server.signal('SIGTERM');
      expect((await server.exit()).code).toBe(0);
      expect(server.stderr.text()).toBe('');
      expect(existsSync(join('/dev/shm', shm))).toBe(false);
    }
  });

  it("does not take a live server's object: the second server on its socket is refused, the first serves on", async () => {
    const shm = shmName();
    const socket = scratch.socket();
    const first = ivshmem(['server', '-S', socket, '-M', shm, '-l', '64K'], 'first');
    await first.stdout.line(`listening on ${socket}`);
    const writer = await connectPeer(socket, 'writer');
    writer.send('write 200 c0ffee');
    await writer.event('written');

    for (const extra of [[], ['--force']]) {
      const second = await run(['server', '-S', socket, '-M', shm, '-l', '1M', ...extra]);
      expect(second.code).toBe(1);
      expect(second.stderr.trim().split('\n')).toEqual([`ivshmem: a server is already listening on ${socket}`]);
      expect(second.stdout).toBe('');
    }
    expect(statSync(join('/dev/shm', shm)).size).toBe(65536);
    const reader = ivshmem(['peer', '-S', socket, '--json'], 'reader');
    // (The second servers' liveness probes took IDs of their own.)
    expect(await reader.event('connected')).toMatchObject({ size: 65536, peers: [{ id: 0 }] });
    reader.send('read 200 3');
    expect(await reader.event('read')).toMatchObject({ offset: 200, hex: 'c0ffee' });
    expect(first.running).toBe(true);
    expect(first.stderr.text()).toBe('');
  });

  it('an object group or others can open is not reused: exit 1, it is left alone', async () => {
    const shm = shmName();
    leaveBehind(`/${shm}`, 8192);
    const { chmodSync } = await import('node:fs');
    chmodSync(join('/dev/shm', shm), 0o666);
    const socket = scratch.socket();
    const result = await run(['server', '--json', '-S', socket, '-M', shm]);
    expect(result.code).toBe(1);
    const error = JSON.parse(result.stdout.trim()) as JsonEvent;
    expect(error).toMatchObject({ event: 'error' });
    expect(error.message).toMatch(/EEXIST.*is not reused: its mode 666 lets group or others open it.*--force/);
    expect(statSync(join('/dev/shm', shm)).size).toBe(8192);
    expect(existsSync(socket)).toBe(false);
  });
});
