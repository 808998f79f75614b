/**
 * The native counters are true: two bitmask peers in a child process run under
 * `strace -f -e trace=write,read`, do a known workload against a server in THIS process (so
 * the server's syscalls are not in the trace), and print their counters. Every write(2) and
 * read(2) on the peers' eventfds (the fds that became 'anon_inode:[eventfd]' when the peers
 * connected: the received eventfds, which their interrupt tables adopted) is counted from
 * the trace; the native eventfdWrites and eventfdReads must equal those counts exactly.
 *
 * Without strace: skipped with a message, except in CI (CI set), where it fails.
 */
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { InterruptCounters } from '../../lib/index.js';
import { JsonChild } from '../helpers/children.js';
import { Scratch } from '../helpers/paths.js';
import { within } from '../helpers/wait.js';
import { STRACE_MISSING_MESSAGE, requireStraceOrSkip, useResources } from './helpers.js';

const strace = requireStraceOrSkip();

const traces = new Scratch();
afterEach(() => traces.cleanup()); // runs after useResources' afterEach: the traced children are gone by then
const res = useResources();

interface EventfdCall {
  pid: number;
  syscall: 'read' | 'write';
  fd: number;
  size: number;
  /** The return value, or null when the line was split (<unfinished ...>) and not matched up. */
  result: string | null;
}

/** Index of the line where the fixture wrote its JSON line of `type` to stdout. */
function markerLine(lines: readonly string[], type: string): number {
  const marker = new RegExp(`write\\(1, "\\{\\\\"type\\\\":\\\\"${type}\\\\"`);
  const index = lines.findIndex((line) => marker.test(line));
  if (index < 0) throw new Error(`no write of the '${type}' line in the trace`);
  return index;
}

/**
 * The read/write calls on `fds` in a `strace -f` log (one call per line or per
 * `<unfinished ...>` start), between the fixture's 'ready' and 'done' lines: fd numbers are
 * reused over a process's life (node reads files at startup on the numbers the eventfds get
 * later), and the fixture makes no eventfd call before 'ready' or after 'done'.
 */
function eventfdCalls(log: string, fds: ReadonlySet<number>): EventfdCall[] {
  const calls: EventfdCall[] = [];
  const open = new Map<number, EventfdCall>(); // pid -> call waiting for its '<... resumed>'
  const lines = log.split('\n');
  for (const line of lines.slice(markerLine(lines, 'ready') + 1, markerLine(lines, 'done'))) {
    const resumed = /^(\d+)\s+<\.\.\. (read|write) resumed>.*\)\s+=\s+(.*)$/.exec(line);
    if (resumed !== null) {
      const call = open.get(Number(resumed[1]));
      if (call !== undefined && call.syscall === resumed[2]) {
        call.result = resumed[3]!.trim();
        open.delete(call.pid);
      }
      continue;
    }
    const m = /^(?:(\d+)\s+)?(read|write)\((\d+), (.*)$/.exec(line);
    if (m === null) continue;
    const fd = Number(m[3]);
    if (!fds.has(fd)) continue;
    const rest = m[4]!;
    const pid = Number(m[1] ?? 0);
    const unfinished = /, (\d+) <unfinished \.\.\.>$/.exec(rest);
    if (unfinished !== null) {
      const call: EventfdCall = { pid, syscall: m[2] as 'read' | 'write', fd, size: Number(unfinished[1]), result: null };
      calls.push(call);
      open.set(pid, call);
      continue;
    }
    const done = /, (\d+)\)\s+=\s+(.*)$/.exec(rest);
    if (done === null) throw new Error(`cannot parse strace line: ${line}`);
    calls.push({ pid, syscall: m[2] as 'read' | 'write', fd, size: Number(done[1]), result: done[2]!.trim() });
  }
  return calls;
}

describe('native counters against strace', () => {
  it('requireStraceOrSkip: null without strace on PATH, but a failure in CI', () => {
    const saved = { PATH: process.env.PATH, CI: process.env.CI };
    try {
      process.env.PATH = '/nonexistent-dir-for-this-test';
      delete process.env.CI;
      expect(requireStraceOrSkip()).toBeNull();
      process.env.CI = 'false';
      expect(requireStraceOrSkip()).toBeNull();
      process.env.CI = 'true';
      expect(() => requireStraceOrSkip()).toThrow(/strace is required in CI/);
    } finally {
      process.env.PATH = saved.PATH;
      if (saved.CI === undefined) delete process.env.CI;
      else process.env.CI = saved.CI;
    }
    expect(STRACE_MISSING_MESSAGE).toContain('apt-get install -y strace');
  });

  // Declared only when strace is absent, so that a machine with strace reports no skipped test.
  if (strace === null) {
    it('strace missing', (ctx) => {
      ctx.skip(STRACE_MISSING_MESSAGE);
    });
  }

  it.skipIf(strace === null)('eventfdWrites and eventfdReads equal the eventfd write(2)/read(2) calls strace sees', { timeout: 120_000 }, async () => {
    const server = res.listen('strace', { size: 64 * 1024, bitmask: true });
    const trace = traces.path('log', 'strace');
    const ROUNDS = 10;
    const PER_ROUND = 100;
    const child = JsonChild.fixture('doorbell/strace-peers.mjs', { socketPath: server.socketPath, rounds: ROUNDS, perRound: PER_ROUND }, 'traced peers', {
      prefix: [strace!, '-f', '-qq', '-e', 'trace=write,read', '-e', 'signal=none', '-o', trace, '--'],
    });
    const ready = await child.waitForType('ready', 60_000);
    const done = await child.waitForType('done', 60_000);
    // Close the server before the peers leave (nothing of the server is traced anyway), then
    // let the child exit so that strace flushes its log.
    server.close();
    child.send({ cmd: 'quit' });
    const exit = await within(child.exited, 'the traced child to exit', 60_000);
    expect(exit, child.diagnostics()).toEqual({ code: 0, signal: null });

    const a = done.a as InterruptCounters;
    const b = done.b as InterruptCounters;
    const sum = done.sum as InterruptCounters;
    // The workload is what it says: ROUNDS * PER_ROUND rings of which exactly ROUNDS were edges.
    expect(done.rings).toBe(ROUNDS * PER_ROUND);
    expect(done.edges).toBe(ROUNDS);
    expect(a.rings).toBe(ROUNDS * PER_ROUND);
    expect(a.signals).toBe(ROUNDS);
    expect(a.suppressed).toBe(ROUNDS * PER_ROUND - ROUNDS);
    expect(a.eventfdWrites).toBe(ROUNDS);
    expect(done.replies).toBe(ROUNDS);
    expect(b.signals).toBe(ROUNDS);
    expect(b.interrupts).toBe(ROUNDS);
    expect(a.interrupts).toBe(ROUNDS);
    expect(sum.spurious).toBe(0);

    const fds = new Set<number>([...(ready.eventfds as number[]), ...(done.eventfds as number[])]);
    expect(done.eventfds).toEqual(ready.eventfds);
    expect(fds.size).toBeGreaterThanOrEqual(4); // each peer: its own eventfd and the other's, at least

    const log = readFileSync(trace, 'utf8');
    const calls = eventfdCalls(log, fds);
    const writes = calls.filter((c) => c.syscall === 'write');
    const reads = calls.filter((c) => c.syscall === 'read');
    console.log(
      `strace: ${writes.length} eventfd writes, ${reads.length} eventfd reads on fds ${[...fds].join(',')}; ` +
        `native: eventfdWrites ${sum.eventfdWrites}, eventfdReads ${sum.eventfdReads}, wakeups ${sum.wakeups}`,
    );
    // Every eventfd access is 8 bytes; writes succeed; reads return 8 bytes or EAGAIN.
    for (const c of calls) expect(c.size, JSON.stringify(c)).toBe(8);
    for (const w of writes) if (w.result !== null) expect(w.result).toBe('8');
    for (const r of reads) if (r.result !== null) expect(r.result).toMatch(/^(8|-1 EAGAIN\b.*)$/);

    expect(sum.eventfdWrites).toBe(writes.length);
    expect(sum.eventfdReads).toBe(reads.length);
    expect(writes.length).toBe(2 * ROUNDS);
    expect(reads.length).toBeGreaterThanOrEqual(2 * ROUNDS);
  });
});
