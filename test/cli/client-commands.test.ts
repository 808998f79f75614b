/**
 * QEMU's ivshmem-client habits in `ivshmem peer` (cli/session.ts, shared with `ivshmem guest
 * peer`): its stdin commands (`int PEER VECTOR`, `int PEER all`, `int all`, `dump`, `?`). Real
 * CLI children against a real `ivshmem server` child.
 */
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

async function jsonPeer(socket: string, label: string): Promise<{ peer: CliProcess; id: number }> {
  const peer = ivshmem(['peer', '-S', socket, '--json'], label);
  const hello = await peer.event('connected');
  return { peer, id: hello.id as number };
}

/** The next `n` events `event` of `peer`. */
async function events(peer: CliProcess, event: string, n: number): Promise<JsonEvent[]> {
  const out: JsonEvent[] = [];
  for (let i = 0; i < n; i++) out.push(await peer.event(event));
  return out;
}

/** The vectors of the next `n` interrupt events, sorted (each vector is its own eventfd). */
async function interruptVectors(peer: CliProcess, n: number): Promise<number[]> {
  return (await events(peer, 'interrupt', n)).map((e) => e.vector as number).sort((x, y) => x - y);
}

/** The help of `help` (one line per command), for `?` to equal. */
const HELP_LINES = [
  'ring PEER [VECTOR]   ring PEER on VECTOR (default 0); your own ID rings yourself',
  'ring all [VECTOR]    ring every other known peer',
  'int PEER VECTOR      ring PEER on VECTOR (int, dump and ? as in QEMU ivshmem-client)',
  'int PEER all         ring every vector of PEER',
  'int all              ring every vector of every other known peer',
  'peers                list the other known peers as ID(VECTORS)',
  'dump                 a table of the own ID and every known peer with its vectors',
  'read OFFSET LENGTH   hex dump of shared memory',
  'write OFFSET HEX     write bytes given as hex digits (e.g. deadbeef) into shared memory',
  'help, ?              this list',
  'quit, exit           leave (as does end of input)',
];

describe("ivshmem peer: ivshmem-client's commands", () => {
  it('int PEER VECTOR rings that vector, int PEER all every vector of PEER (its own ID too)', async () => {
    const { socket } = await startServer(['-n', '3']);
    const a = await jsonPeer(socket, 'A');
    const b = await jsonPeer(socket, 'B');
    await a.peer.event('peer-joined');

    a.peer.send(`int ${b.id} 2`);
    expect(await a.peer.event('rang')).toEqual({ event: 'rang', peer: b.id, vector: 2 });
    expect(await b.peer.event('interrupt')).toEqual({ event: 'interrupt', vector: 2, count: 1 });
    // 0x hex as everywhere else.
    a.peer.send(`int ${b.id} 0x1`);
    expect(await a.peer.event('rang')).toEqual({ event: 'rang', peer: b.id, vector: 1 });
    expect(await b.peer.event('interrupt')).toEqual({ event: 'interrupt', vector: 1, count: 1 });

    a.peer.send(`int ${b.id} all`);
    expect(await events(a.peer, 'rang', 3)).toEqual([0, 1, 2].map((vector) => ({ event: 'rang', peer: b.id, vector })));
    expect(await interruptVectors(b.peer, 3)).toEqual([0, 1, 2]);

    // As in ivshmem-client, the own ID is a peer to ring too.
    b.peer.send(`int ${b.id} all`);
    expect(await events(b.peer, 'rang', 3)).toEqual([0, 1, 2].map((vector) => ({ event: 'rang', peer: b.id, vector })));
    expect(await interruptVectors(b.peer, 3)).toEqual([0, 1, 2]);
    // A was rung by none of it.
    a.peer.send('peers');
    await a.peer.event('peers');
    expect(a.peer.stdout.history.filter((l) => l.includes('"interrupt"'))).toEqual([]);
  });

  it('int all rings every vector of every other peer, not its own', async () => {
    const { socket } = await startServer(['-n', '2']);
    const a = await jsonPeer(socket, 'A');
    const b = await jsonPeer(socket, 'B');
    const c = await jsonPeer(socket, 'C');
    await a.peer.event('peer-joined', (e) => e.id === c.id);

    a.peer.send('int all');
    expect(await events(a.peer, 'rang', 4)).toEqual([
      { event: 'rang', peer: b.id, vector: 0 },
      { event: 'rang', peer: b.id, vector: 1 },
      { event: 'rang', peer: c.id, vector: 0 },
      { event: 'rang', peer: c.id, vector: 1 },
    ]);
    expect(await interruptVectors(b.peer, 2)).toEqual([0, 1]);
    expect(await interruptVectors(c.peer, 2)).toEqual([0, 1]);
    // B and C have theirs: A's own vectors were not rung.
    a.peer.send('dump');
    await a.peer.event('dump');
    expect(a.peer.stdout.history.filter((l) => l.includes('"interrupt"'))).toEqual([]);
  });

  it('int reports unknown peers, missing vectors and bad arguments as errors and keeps running', async () => {
    const { socket } = await startServer(['-n', '2']);
    const a = await jsonPeer(socket, 'A');
    // Alone: nobody for int all.
    a.peer.send('int all');
    expect(await a.peer.event('error')).toEqual({ event: 'error', message: 'no other peers to ring' });

    const b = await jsonPeer(socket, 'B');
    await a.peer.event('peer-joined');
    const bad: [string, string | RegExp][] = [
      ['int 4242 1', `peer 4242 is not known to peer ${a.id}`],
      ['int 4242 all', `peer 4242 is not known to peer ${a.id}`],
      [`int ${b.id} 2`, `peer ${b.id} has no vector 2 (it has 2)`],
      ['int', 'usage: int PEER VECTOR|all, or int all'],
      [`int ${b.id}`, 'usage: int PEER VECTOR|all, or int all'],
      [`int ${b.id} 0 1`, 'usage: int PEER VECTOR|all, or int all'],
      ['int all 1', 'usage: int PEER VECTOR|all, or int all'],
      ['int x 1', /^invalid peer "x"/],
      ['int x all', /^invalid peer "x"/],
      [`int ${b.id} y`, /^invalid vector "y"/],
      ['dump now', 'usage: dump'],
    ];
    for (const [command, message] of bad) {
      a.peer.send(command);
      const error = await a.peer.event('error');
      expect(Object.keys(error).sort(), command).toEqual(['event', 'message']);
      if (typeof message === 'string') expect(error.message, command).toBe(message);
      else expect(error.message, command).toMatch(message);
    }
    // Nothing of that rang B, and A still answers.
    a.peer.send(`int ${b.id} 1`);
    expect(await a.peer.event('rang')).toEqual({ event: 'rang', peer: b.id, vector: 1 });
    expect(await b.peer.event('interrupt')).toEqual({ event: 'interrupt', vector: 1, count: 1 });
    expect(b.peer.stdout.history.filter((l) => l.includes('"interrupt"'))).toHaveLength(1);
    expect(a.peer.running).toBe(true);
  });

  it('dump prints the own ID and every known peer with its vectors (JSON)', async () => {
    const { socket } = await startServer(['-n', '3']);
    const a = await jsonPeer(socket, 'A');
    a.peer.send('dump');
    expect(await a.peer.event('dump')).toEqual({ event: 'dump', id: a.id, vectors: 3, peers: [] });

    const b = await jsonPeer(socket, 'B');
    const c = await jsonPeer(socket, 'C');
    await a.peer.event('peer-joined', (e) => e.id === c.id);
    a.peer.send('dump');
    expect(await a.peer.event('dump')).toEqual({
      event: 'dump',
      id: a.id,
      vectors: 3,
      peers: [
        { id: b.id, vectors: 3 },
        { id: c.id, vectors: 3 },
      ],
    });
    b.peer.send('quit');
    await a.peer.event('peer-left');
    a.peer.send('dump');
    expect(await a.peer.event('dump')).toEqual({ event: 'dump', id: a.id, vectors: 3, peers: [{ id: c.id, vectors: 3 }] });
  });

  it('dump prints a table in text; ? is help', async () => {
    const { socket } = await startServer(['-n', '2']);
    const a = ivshmem(['peer', '-S', socket], 'A');
    await a.stdout.line('peers: (none)');
    const b = ivshmem(['peer', '-S', socket], 'B');
    expect(await b.stdout.take()).toBe('connected: id 1, 2 vectors, 4194304 bytes shared');
    expect(await b.stdout.take()).toBe('peers: 0(2)');
    await a.stdout.line('peer 1 joined');

    b.send('dump');
    expect([await b.stdout.take(), await b.stdout.take(), await b.stdout.take()]).toEqual([
      '   ID  VECTORS',
      '    1        2  (us)',
      '    0        2',
    ]);
    a.send('dump');
    expect([await a.stdout.take(), await a.stdout.take(), await a.stdout.take()]).toEqual([
      '   ID  VECTORS',
      '    0        2  (us)',
      '    1        2',
    ]);

    for (const command of ['?', 'help']) {
      b.send(command);
      const lines: string[] = [];
      for (const _ of HELP_LINES) lines.push(await b.stdout.take());
      expect(lines, command).toEqual(HELP_LINES);
    }

    // The text of int: the rang lines of ring.
    b.send('int 0 all');
    expect([await b.stdout.take(), await b.stdout.take()]).toEqual(['rang peer 0 on vector 0', 'rang peer 0 on vector 1']);
    b.send('int 7 1');
    expect(await b.stdout.take()).toBe('error: peer 7 is not known to peer 1');
    b.send('quit');
    expect(await b.exit()).toEqual({ code: 0, signal: null });
    // No prompt without a terminal, and nothing but these lines.
    expect(b.stdout.history.join('\n')).not.toContain('cmd>');
    expect(b.stdout.history).toHaveLength(2 + 3 + 2 * HELP_LINES.length + 3);
    expect(b.stderr.text()).toBe('');
  });

  it('? with --json is the help event', async () => {
    const { socket } = await startServer();
    const a = await jsonPeer(socket, 'A');
    a.peer.send('?');
    expect(await a.peer.event('help')).toEqual({ event: 'help', commands: HELP_LINES });
    a.peer.send('frobnicate');
    expect(await a.peer.event('error')).toEqual({
      event: 'error',
      message: 'unknown command "frobnicate"; try: ring, int, peers, dump, read, write, help, quit',
    });
  });

  it('peer --help and guest peer --help list the commands and dump', async () => {
    for (const args of [['peer', '--help'], ['guest', 'peer', '--help']]) {
      const result = await run(args);
      expect(result.code, args.join(' ')).toBe(0);
      for (const line of HELP_LINES) expect(result.stdout, args.join(' ')).toContain(`  ${line}`);
      expect(result.stdout).toContain('{"event":"dump","id":3,"vectors":2,"peers":[{"id":0,"vectors":2}]}');
      expect(result.stdout).toContain('      3        2  (us)');
    }
  });
});
