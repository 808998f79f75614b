/**
 * QEMU's ivshmem-client habits in `ivshmem peer` (cli/session.ts, shared with `ivshmem guest
 * peer`): its stdin commands (`int PEER VECTOR`, `int PEER all`, `int all`, `dump`, `?`), its
 * `cmd> ` prompt on a terminal, and trying the server again every second (--retry). Real CLI
 * children against a real `ivshmem server` child; the prompt under a real pseudo-terminal.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ivshmem, run, type CliProcess, type JsonEvent } from '../fixtures/cli/child.js';
import { haveScript, TerminalProcess } from '../fixtures/cli/terminal.js';
import { killAllChildren } from '../helpers/children.js';
import { Scratch } from '../helpers/paths.js';
import { sleep } from '../helpers/wait.js';

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

  it('peer --help and guest peer --help list the commands, dump and --retry', async () => {
    for (const args of [['peer', '--help'], ['guest', 'peer', '--help']]) {
      const result = await run(args);
      expect(result.code, args.join(' ')).toBe(0);
      for (const line of HELP_LINES) expect(result.stdout, args.join(' ')).toContain(`  ${line}`);
      expect(result.stdout).toContain('{"event":"dump","id":3,"vectors":2,"peers":[{"id":0,"vectors":2}]}');
      expect(result.stdout).toContain('      3        2  (us)');
      expect(result.stdout).toContain('prompts "cmd> "');
    }
    const peer = await run(['peer', '--help']);
    expect(peer.stdout).toMatch(/^\s+--retry\s+while no server listens/m);
    expect((await run(['guest', 'peer', '--help'])).stdout).not.toContain('--retry');
  });
});

describe.skipIf(!haveScript())("ivshmem peer on a terminal: ivshmem-client's cmd> prompt", () => {
  it('prompts, edits and recalls lines, and keeps event lines whole above the prompt', async () => {
    const { socket } = await startServer(['-n', '2']);
    const tty = new TerminalProcess(['peer', '-S', socket], 'tty peer');
    await tty.until((s) => s.current === 'cmd>', 'the prompt');
    expect(tty.screen.lines).toEqual(['connected: id 0, 2 vectors, 4194304 bytes shared', 'peers: (none)', 'cmd>']);

    tty.type('dump\r');
    await tty.until((s) => s.lines.length === 6 && s.current === 'cmd>', 'the dump and the next prompt');
    expect(tty.screen.lines.slice(2)).toEqual(['cmd> dump', '   ID  VECTORS', '    0        2  (us)', 'cmd>']);

    // Half a command typed, then events: they go above the prompt, which keeps what was typed.
    tty.type('du');
    await tty.until((s) => s.current === 'cmd> du', 'the typed text');
    const other = await jsonPeer(socket, 'other');
    await tty.line('peer 1 joined');
    other.peer.send('ring 0 1');
    await tty.line('interrupt on vector 1');
    await tty.until((s) => s.current === 'cmd> du', 'the prompt with the typed text again');
    expect(tty.screen.lines.slice(5)).toEqual(['peer 1 joined', 'interrupt on vector 1', 'cmd> du']);

    // Finishing the line runs it.
    tty.type('mp\r');
    await tty.line('    1        2');
    await tty.until((s) => s.current === 'cmd>', 'the next prompt');
    expect(tty.screen.lines.slice(7)).toEqual(['cmd> dump', '   ID  VECTORS', '    0        2  (us)', '    1        2', 'cmd>']);

    // Line editing: left arrow, insert, right arrow, backspace, End.
    const left = '\x1b[D';
    await tty.press(
      ['int 1 ', 'cmd> int 1 |'],
      [left, 'cmd> int 1|'],
      [left, 'cmd> int |1'],
      [left, 'cmd> int| 1'],
      [left, 'cmd> in|t 1'],
      [left, 'cmd> i|nt 1'],
      [left, 'cmd> |int 1'],
      [' ', 'cmd>  |int 1'],
      ['\x1b[C', 'cmd>  i|nt 1'],
      ['x', 'cmd>  ix|nt 1'],
      ['\x7f', 'cmd>  i|nt 1'],
      ['\x1b[F', 'cmd>  int 1 |'],
      ['1', 'cmd>  int 1 1|'],
    );
    tty.type('\r');
    await tty.line('rang peer 1 on vector 1');
    expect(tty.screen.lines.at(-3)).toBe('cmd>  int 1 1');
    expect(await other.peer.event('interrupt')).toEqual({ event: 'interrupt', vector: 1, count: 1 });

    // History: the up arrow twice brings back dump.
    await tty.press(['\x1b[A', 'cmd>  int 1 1|'], ['\x1b[A', 'cmd> dump|']);
    tty.type('\r');
    await tty.until((s) => s.lines.length === 18 && s.current === 'cmd>', 'the second dump');
    expect(tty.screen.lines.slice(14)).toEqual(['   ID  VECTORS', '    0        2  (us)', '    1        2', 'cmd>']);

    tty.type('quit\r');
    expect(await tty.exit()).toEqual({ code: 0, signal: null });
    expect(await other.peer.event('peer-left')).toEqual({ event: 'peer-left', id: 0 });
    // Nothing after quit: no prompt again.
    expect(tty.screen.lines.at(-2)).toBe('cmd> quit');
    expect(tty.screen.lines.at(-1)).toBe('');
  });

  it('keeps a typed line that wraps whole below event lines', async () => {
    const { socket } = await startServer(['-n', '2']);
    const tty = new TerminalProcess(['peer', '-S', socket], 'narrow tty', { columns: 24 });
    await tty.until((s) => s.current === 'cmd>', 'the prompt');
    // 24 columns: the connected line takes two rows.
    expect(tty.screen.lines).toEqual(['connected: id 0, 2 vecto', 'rs, 4194304 bytes shared', 'peers: (none)', 'cmd>']);

    // Pasted (one chunk) and then typed: 5 + 27 characters, two rows of input.
    tty.type('write 0x40 dead');
    await tty.until((s) => s.current === 'cmd> write 0x40 dead', 'the pasted input');
    // Typed: each key alone. The one that fills the row makes readline redraw, the cursor at
    // the start of the next row.
    await tty.press(
      ['b', 'cmd> write 0x40 deadb|'],
      ['e', 'cmd> write 0x40 deadbe|'],
      ['e', 'cmd> write 0x40 deadbee|'],
      ['f', '|'],
      ...[...'cafef00d'].map((key, i) => [key, `${'cafef00d'.slice(0, i + 1)}|`] as const),
    );
    await tty.until((s) => s.current === 'cafef00d', 'the wrapped input');
    const other = await jsonPeer(socket, 'other');
    await tty.line('peer 1 joined');
    other.peer.send('ring 0 1');
    await tty.line('interrupt on vector 1');
    await tty.until((s) => s.current === 'cafef00d', 'the wrapped input again');
    expect(tty.screen.lines.slice(3)).toEqual(['peer 1 joined', 'interrupt on vector 1', 'cmd> write 0x40 deadbeef', 'cafef00d']);

    // A third event after pasted input only (readline did not redraw it itself).
    tty.type('\x15'); // ^U: the line emptied
    await tty.until((s) => s.current === 'cmd>', 'the emptied line');
    tty.type('write 0x40 deadbeefcafef00d');
    await tty.until((s) => s.current === 'cafef00d', 'the pasted wrapped input');
    other.peer.send('ring 0 0');
    await tty.line('interrupt on vector 0');
    await tty.until((s) => s.current === 'cafef00d', 'the pasted input again');
    expect(tty.screen.lines.slice(3)).toEqual([
      'peer 1 joined',
      'interrupt on vector 1',
      'interrupt on vector 0',
      'cmd> write 0x40 deadbeef',
      'cafef00d',
    ]);

    tty.type('\r');
    await tty.line('wrote 8 bytes at 0x40');
    other.peer.send('read 0x40 8');
    expect(await other.peer.event('read')).toEqual({ event: 'read', offset: 64, hex: 'deadbeefcafef00d' });
    tty.type('quit\r');
    expect(await tty.exit()).toEqual({ code: 0, signal: null });
  });

  it('on a dumb terminal (TERM=dumb) event lines follow the prompt, and it is shown again', async () => {
    const { socket } = await startServer();
    const tty = new TerminalProcess(['peer', '-S', socket], 'dumb tty', { term: 'dumb' });
    await tty.until((s) => s.current === 'cmd>', 'the prompt');
    const other = await jsonPeer(socket, 'other');
    await tty.line('peer 1 joined');
    await tty.until((s) => s.current === 'cmd>', 'the prompt again');
    tty.type('dump\r');
    await tty.line('    1        1');
    await tty.until((s) => s.current === 'cmd>', 'the prompt after dump');
    expect(tty.raw).not.toContain('\x1b');
    expect(tty.screen.lines).toEqual([
      'connected: id 0, 1 vector, 4194304 bytes shared',
      'peers: (none)',
      'cmd>',
      'peer 1 joined',
      'cmd> dump',
      '   ID  VECTORS',
      '    0        1  (us)',
      '    1        1',
      'cmd>',
    ]);
    tty.type('quit\r');
    expect(await tty.exit()).toEqual({ code: 0, signal: null });
    expect(await other.peer.event('peer-left')).toEqual({ event: 'peer-left', id: 0 });
  });

  it('^C and ^D at the prompt leave with status 0 on a line of their own', async () => {
    const { socket, server } = await startServer();
    for (const [key, name] of [
      ['\x03', '^C'],
      ['\x04', '^D'],
    ] as const) {
      const tty = new TerminalProcess(['peer', '-S', socket], `tty ${name}`);
      await tty.until((s) => s.current === 'cmd>', 'the prompt');
      tty.type(key);
      expect(await tty.exit(), name).toEqual({ code: 0, signal: null });
      expect(tty.screen.lines.slice(-2), name).toEqual(['cmd>', '']);
      await server.stdout.matching(/^peer \d+ left/);
    }
  });

  it('--json on a terminal has no prompt: the same JSON lines', async () => {
    const { socket } = await startServer();
    const tty = new TerminalProcess(['peer', '-S', socket, '--json'], 'tty json');
    await tty.until((s) => s.lines[0]!.startsWith('{"event":"connected"'), 'the connected line');
    tty.type('dump\r');
    await tty.until((s) => s.lines.some((l) => l.startsWith('{"event":"dump"')), 'the dump event');
    tty.type('\x04'); // end of input, in the terminal's own line discipline
    expect(await tty.exit()).toEqual({ code: 0, signal: null });
    expect(tty.raw).not.toContain('cmd>');
    // The terminal echoes what was typed itself (cooked mode); the rest is one JSON object a line.
    const lines = tty.screen.lines.filter((l) => l.startsWith('{'));
    expect(tty.screen.lines.filter((l) => !l.startsWith('{') && l !== '')).toEqual(['dump']);
    expect(lines.map((l) => JSON.parse(l) as JsonEvent)).toEqual([
      { event: 'connected', id: 0, vectors: 1, size: 4194304, peers: [] },
      { event: 'dump', id: 0, vectors: 1, peers: [] },
    ]);
  });
});

describe('ivshmem peer --retry', () => {
  const note = (socket: string, reason: string): string => `waiting for the server at ${socket} (${reason})…`;

  it('waits for a server that is not there yet, noting each reason once, then connects', async () => {
    const socket = scratch.socket();
    const peer = ivshmem(['peer', '-S', socket, '--json', '--retry'], 'peer');
    await peer.stderr.line(note(socket, 'ENOENT'));
    // Three more tries: still the one note, nothing on stdout, still running.
    await sleep(3200);
    expect(peer.stderr.history).toEqual([note(socket, 'ENOENT')]);
    expect(peer.stdout.history).toEqual([]);
    expect(peer.running).toBe(true);

    // Something that is no server at the path: a new reason, noted once.
    writeFileSync(socket, '');
    await peer.stderr.line(note(socket, 'ECONNREFUSED'));
    await sleep(2200);
    rmSync(socket);

    const server = ivshmem(['server', '-S', socket, '-n', '2'], 'server');
    await server.stdout.line(`listening on ${socket}`);
    expect(await peer.event('connected')).toEqual({ event: 'connected', id: 0, vectors: 2, size: 4194304, peers: [] });
    await server.stdout.line('peer 0 joined');
    expect(peer.stderr.history).toEqual([note(socket, 'ENOENT'), note(socket, 'ECONNREFUSED')]);
    // A session like any other.
    peer.send('dump');
    expect(await peer.event('dump')).toEqual({ event: 'dump', id: 0, vectors: 2, peers: [] });
    peer.send('quit');
    expect(await peer.exit()).toEqual({ code: 0, signal: null });
    expect(peer.stdout.history).toHaveLength(2);
  });

  it('in text, connects once the server is there', async () => {
    const socket = scratch.socket();
    const peer = ivshmem(['peer', '-S', socket, '--retry'], 'peer');
    await peer.stderr.line(note(socket, 'ENOENT'));
    ivshmem(['server', '-S', socket], 'server');
    expect(await peer.stdout.take()).toBe('connected: id 0, 1 vector, 4194304 bytes shared');
    expect(await peer.stdout.take()).toBe('peers: (none)');
    expect(peer.stderr.history).toEqual([note(socket, 'ENOENT')]);
  });

  it('SIGINT and SIGTERM while waiting leave with status 0', async () => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const socket = scratch.socket();
      const peer = ivshmem(['peer', '-S', socket, '--retry'], `peer ${signal}`);
      await peer.stderr.line(note(socket, 'ENOENT'));
      peer.signal(signal);
      expect(await peer.exit(), signal).toEqual({ code: 0, signal: null });
      expect(peer.stdout.history, signal).toEqual([]);
    }
  });

  it('other failures are final: refused memory exits 1 at once', async () => {
    const { socket } = await startServer();
    const result = await run(['peer', '-S', socket, '--retry', '--max-size', '1M', '--json']);
    expect(result.code).toBe(1);
    expect(JSON.parse(result.stdout)).toMatchObject({ event: 'error', message: expect.stringMatching(/^cannot connect to /) });
    expect(result.stderr).not.toContain('waiting for the server');
  });

  it('without --retry a missing server still fails at once', async () => {
    const socket = scratch.socket();
    const result = await run(['peer', '-S', socket]);
    expect(result).toMatchObject({ code: 1, stdout: '' });
    expect(result.stderr).toBe(`ivshmem: cannot connect to ${socket}: ENOENT: no such file or directory, connect '${socket}'`);
  });
});
