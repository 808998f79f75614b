import { afterEach, describe, expect, it } from 'vitest';
import { ivshmem, run, type CliProcess, type JsonEvent } from '../fixtures/cli/child.js';
import { killAllChildren } from '../helpers/children.js';
import { Scratch } from '../helpers/paths.js';

const scratch = new Scratch();

afterEach(async () => {
  await killAllChildren();
  scratch.cleanup();
});

async function startServer(args: string[] = []): Promise<{ socket: string; server: CliProcess }> {
  const socket = scratch.socket();
  const server = ivshmem(['server', '-S', socket, ...args], 'server');
  expect(await server.stdout.take()).toBe(`listening on ${socket}`);
  return { socket, server };
}

/** A `peer --json` and its connected event. */
async function jsonPeer(socket: string, label: string): Promise<{ peer: CliProcess; hello: JsonEvent; id: number }> {
  const peer = ivshmem(['peer', '-S', socket, '--json'], label);
  const hello = await peer.event('connected');
  return { peer, hello, id: hello.id as number };
}

describe('ivshmem peer --json', () => {
  it('reports connects and joins, and rings one peer, all peers, and each vector', async () => {
    const { socket } = await startServer(['-n', '2', '-l', '1M']);
    const a = await jsonPeer(socket, 'A');
    expect(a.hello).toEqual({ event: 'connected', id: a.id, vectors: 2, size: 1048576, peers: [] });

    const b = await jsonPeer(socket, 'B');
    expect(b.id).not.toBe(a.id);
    expect(b.hello).toMatchObject({ vectors: 2, size: 1048576, peers: [{ id: a.id, vectors: 2 }] });
    expect(await a.peer.event('peer-joined')).toEqual({ event: 'peer-joined', id: b.id });

    // A third peer: both earlier peers see it join.
    const c = await jsonPeer(socket, 'C');
    expect(c.hello.peers).toEqual([
      { id: a.id, vectors: 2 },
      { id: b.id, vectors: 2 },
    ]);
    expect(await a.peer.event('peer-joined')).toEqual({ event: 'peer-joined', id: c.id });
    expect(await b.peer.event('peer-joined')).toEqual({ event: 'peer-joined', id: c.id });

    a.peer.send(`ring ${b.id} 0`);
    expect(await a.peer.event('rang')).toEqual({ event: 'rang', peer: b.id, vector: 0 });
    expect(await b.peer.event('interrupt')).toEqual({ event: 'interrupt', vector: 0, count: 1 });

    a.peer.send(`ring ${b.id} 1`);
    expect(await a.peer.event('rang')).toEqual({ event: 'rang', peer: b.id, vector: 1 });
    expect(await b.peer.event('interrupt')).toMatchObject({ vector: 1 });

    a.peer.send('ring all 1');
    const rang = [await a.peer.event('rang'), await a.peer.event('rang')];
    expect(rang).toEqual([
      { event: 'rang', peer: b.id, vector: 1 },
      { event: 'rang', peer: c.id, vector: 1 },
    ]);
    expect(await b.peer.event('interrupt')).toMatchObject({ vector: 1 });
    expect(await c.peer.event('interrupt')).toMatchObject({ vector: 1 });

    // `ring all` defaults to vector 0; ringing oneself is allowed.
    b.peer.send('ring all');
    expect(await a.peer.event('interrupt')).toMatchObject({ vector: 0 });
    expect(await c.peer.event('interrupt')).toMatchObject({ vector: 0 });
    c.peer.send(`ring ${c.id}`);
    expect(await c.peer.event('interrupt')).toMatchObject({ vector: 0 });

    a.peer.send('peers');
    expect(await a.peer.event('peers')).toEqual({
      event: 'peers',
      peers: [
        { id: b.id, vectors: 2 },
        { id: c.id, vectors: 2 },
      ],
    });
  });

  it('writes on one peer and reads the bytes on another', async () => {
    const { socket } = await startServer();
    const a = await jsonPeer(socket, 'A');
    const b = await jsonPeer(socket, 'B');
    a.peer.send('write 0x40 deadbeef');
    expect(await a.peer.event('written')).toEqual({ event: 'written', offset: 64, length: 4 });
    b.peer.send('read 0x40 4');
    expect(await b.peer.event('read')).toEqual({ event: 'read', offset: 64, hex: 'deadbeef' });
    b.peer.send('read 62 8');
    expect(await b.peer.event('read')).toEqual({ event: 'read', offset: 62, hex: '0000deadbeef0000' });
    // The last byte of the 4 MiB default is writable; one past it is not.
    b.peer.send('write 0x3fffff ff');
    expect(await b.peer.event('written')).toEqual({ event: 'written', offset: 0x3fffff, length: 1 });
    b.peer.send('write 0x3fffff ffff');
    expect(await b.peer.event('error')).toMatchObject({ message: expect.stringMatching(/outside the shared memory/) });
  });

  it('answers invalid commands with error lines and keeps running', async () => {
    const { socket } = await startServer();
    const a = await jsonPeer(socket, 'A');
    const bad: [string, RegExp][] = [
      ['ring', /usage: ring/],
      ['ring x', /invalid peer "x"/],
      ['ring 1 2 3', /usage: ring/],
      ['ring 4242', /not known/],
      [`ring ${a.id} 7`, /no vector 7/],
      ['ring all', /no other peers/],
      ['read 99999999999 4', /outside the shared memory/],
      ['read 0', /usage: read/],
      ['read 0 -1', /invalid length/],
      ['read 0 0', /at least 1/],
      ['write 0 zz', /invalid data "zz"/],
      ['write 0 abc', /even number of hex digits/],
      ['write 0', /usage: write/],
      ['frobnicate', /unknown command "frobnicate"/],
    ];
    for (const [command, message] of bad) {
      a.peer.send(command);
      const error = await a.peer.event('error');
      expect(error.message, command).toMatch(message);
      expect(Object.keys(error).sort()).toEqual(['event', 'message']);
    }
    // Blank lines are ignored; the peer still answers.
    a.peer.send('');
    a.peer.send('peers');
    expect(await a.peer.event('peers')).toEqual({ event: 'peers', peers: [] });
    expect(a.peer.running).toBe(true);
    // Every line it printed was one JSON object.
    for (const line of a.peer.stdout.history) expect(() => JSON.parse(line), line).not.toThrow();
  });

  it('quit exits 0 and the other peer sees it leave', async () => {
    const { socket, server } = await startServer();
    const a = await jsonPeer(socket, 'A');
    const b = await jsonPeer(socket, 'B');
    await a.peer.event('peer-joined');
    a.peer.send('quit');
    expect(await a.peer.exit()).toEqual({ code: 0, signal: null });
    expect(await b.peer.event('peer-left')).toEqual({ event: 'peer-left', id: a.id });
    await server.stdout.line(`peer ${a.id} left (disconnected)`);
    expect(a.peer.stderr.text()).toBe('');
  });

  it('end of input, SIGINT and SIGTERM each close the peer with status 0', async () => {
    const { socket, server } = await startServer();
    const peers = [await jsonPeer(socket, 'eof'), await jsonPeer(socket, 'int'), await jsonPeer(socket, 'term')];
    const [eof, int, term] = peers as [(typeof peers)[0], (typeof peers)[0], (typeof peers)[0]];
    await eof.peer.event('peer-joined', (e) => e.id === term.id);
    await int.peer.event('peer-joined', (e) => e.id === term.id);
    // One at a time, so that each leave is seen by the peers still there.
    const stops: [typeof eof, () => void][] = [
      [eof, () => eof.peer.endInput()],
      [int, () => int.peer.signal('SIGINT')],
      [term, () => term.peer.signal('SIGTERM')],
    ];
    for (const [i, [leaving, stop]] of stops.entries()) {
      stop();
      expect(await leaving.peer.exit(), leaving.peer.stdout.name).toEqual({ code: 0, signal: null });
      await server.stdout.line(`peer ${leaving.id} left (disconnected)`);
      for (const [staying] of stops.slice(i + 1)) {
        expect(await staying.peer.event('peer-left')).toEqual({ event: 'peer-left', id: leaving.id });
      }
    }
  });

  it('keeps ringing, reading and writing after the server is gone', async () => {
    const { socket, server } = await startServer(['-n', '2']);
    const a = await jsonPeer(socket, 'A');
    const b = await jsonPeer(socket, 'B');
    await a.peer.event('peer-joined');
    a.peer.send('write 0x100 cafe');
    await a.peer.event('written');

    server.signal('SIGTERM');
    expect((await server.exit()).code).toBe(0);
    await a.peer.event('server-lost');
    await b.peer.event('server-lost');

    b.peer.send('read 0x100 2');
    expect(await b.peer.event('read')).toEqual({ event: 'read', offset: 256, hex: 'cafe' });
    b.peer.send('write 0x102 f00d');
    await b.peer.event('written');
    a.peer.send('read 0x100 4');
    expect(await a.peer.event('read')).toMatchObject({ hex: 'cafef00d' });
    // Known peers can still be rung (QEMU semantics).
    b.peer.send(`ring ${a.id} 1`);
    expect(await b.peer.event('rang')).toEqual({ event: 'rang', peer: a.id, vector: 1 });
    expect(await a.peer.event('interrupt')).toMatchObject({ vector: 1 });
    b.peer.send('peers');
    expect(await b.peer.event('peers')).toEqual({ event: 'peers', peers: [{ id: a.id, vectors: 2 }] });
  });

  it('waits for --vectors own vectors', async () => {
    const { socket } = await startServer(['-n', '4']);
    const peer = ivshmem(['peer', '-S', socket, '--json', '--vectors', '4'], 'peer');
    expect(await peer.event('connected')).toMatchObject({ vectors: 4 });
  });

  it('exits 1 with an error event when nothing listens', async () => {
    const socket = scratch.socket();
    const result = await run(['peer', '-S', socket, '--json']);
    expect(result.code).toBe(1);
    const [line, ...rest] = result.stdout.trim().split('\n');
    expect(rest).toEqual([]);
    expect(JSON.parse(line!)).toMatchObject({ event: 'error', message: expect.stringMatching(/cannot connect/) });
    expect(result.stderr).toMatch(/cannot connect to .*ENOENT/);
  });

  it.each([
    [['--vectors', '0'], /vectors/],
    [['--vectors', '65'], /vectors/],
    [['--timeout', 'soon'], /timeout/],
    [['--frobnicate'], /unknown option/],
  ])('%j exits 2 with a message', async (args, message) => {
    const result = await run(['peer', '-S', scratch.socket(), ...args]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
  });
});

describe('ivshmem peer (text)', () => {
  it('prints human lines', async () => {
    const { socket, server } = await startServer(['-n', '2']);
    const a = ivshmem(['peer', '-S', socket], 'A');
    expect(await a.stdout.take()).toBe('connected: id 0, 2 vectors, 4194304 bytes shared');
    expect(await a.stdout.take()).toBe('peers: (none)');

    const b = ivshmem(['peer', '-S', socket], 'B');
    expect(await b.stdout.take()).toBe('connected: id 1, 2 vectors, 4194304 bytes shared');
    expect(await b.stdout.take()).toBe('peers: 0(2)');
    await a.stdout.line('peer 1 joined');

    a.send('ring 1 1');
    await a.stdout.line('rang peer 1 on vector 1');
    await b.stdout.line('interrupt on vector 1');

    a.send('write 0x40 deadbeef');
    await a.stdout.line('wrote 4 bytes at 0x40');
    b.send('read 0x40 4');
    expect(await b.stdout.take()).toMatch(/^00000040  de ad be ef\s+\|\.\.\.\.\|$/);
    b.send('read 0x3c 20');
    expect(await b.stdout.take()).toBe('0000003c  00 00 00 00 de ad be ef  00 00 00 00 00 00 00 00  |................|');
    expect(await b.stdout.take()).toMatch(/^0000004c  00 00 00 00 +\|\.\.\.\.\|$/);

    b.send('peers');
    await b.stdout.line('peers: 0(2)');
    b.send('frobnicate');
    expect(await b.stdout.take()).toMatch(/^error: unknown command "frobnicate"/);

    b.send('quit');
    expect((await b.exit()).code).toBe(0);
    await a.stdout.line('peer 1 left');

    server.signal('SIGTERM');
    await a.stdout.line('server lost');
    a.send('read 0x40 4');
    expect(await a.stdout.take()).toMatch(/^00000040  de ad be ef/);
  });
});
