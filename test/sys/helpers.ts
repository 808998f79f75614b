/**
 * Helpers of the sys suites: /proc/self counters, event-driven waits on watchers and
 * sockets, fixtures (test/fixtures/sys/) run as children, and errors thrown.
 *
 * Waits never assert on time: every wait has a generous timeout that only turns a hang into a
 * readable failure.
 */
import type { StdioOptions } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { isSystemError, type SystemError } from '../../lib/index.js';
import { type FdWatcher, type Received, type UnixSocket } from '../../lib/sys/index.js';
import { JsonChild } from '../helpers/children.js';
import { FIXTURES, requireBuilt } from '../helpers/paths.js';
import { turn, WAIT_MS } from '../helpers/wait.js';

export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Targets of this process's open fds ('anon_inode:[eventfd]', 'socket:[123]', paths...). */
export function fdTargets(): string[] {
  const out: string[] = [];
  for (const entry of readdirSync('/proc/self/fd')) {
    try {
      out.push(readlinkSync(`/proc/self/fd/${entry}`));
    } catch {
      // the directory fd used by readdirSync itself is gone by now
    }
  }
  return out;
}

/** How many open fds have a target matching `pattern`. */
export function fdsMatching(pattern: RegExp): number {
  return fdTargets().filter((t) => pattern.test(t)).length;
}

export function mapsLines(): string[] {
  return readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.length > 0);
}

export function mapsMatching(pattern: RegExp): number {
  return mapsLines().filter((l) => pattern.test(l)).length;
}

/** Is `fd` open in this process? */
export function fdIsOpen(fd: number): boolean {
  return existsSync(`/proc/self/fd/${fd}`);
}

export function fdTarget(fd: number): string {
  return readlinkSync(`/proc/self/fd/${fd}`);
}

/** Lets the event loop turn (setImmediate) for about `ms`; returns how many turns ran. */
export async function idleTurns(ms: number): Promise<number> {
  const end = Date.now() + ms;
  let turns = 0;
  while (Date.now() < end) {
    await turn();
    turns += 1;
  }
  return turns;
}

/** Resolves on the watcher's next 'readable' (the watcher must already be started). */
export function nextReadable(watcher: FdWatcher, what: string, timeoutMs = WAIT_MS): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      watcher.off('readable', onReadable);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} to be readable`));
    }, timeoutMs);
    const onReadable = (): void => {
      clearTimeout(timer);
      watcher.off('readable', onReadable);
      resolve();
    };
    watcher.on('readable', onReadable);
  });
}

/** Waits until `socket` is readable, using a temporary watcher. */
export async function socketReadable(socket: UnixSocket, what: string): Promise<void> {
  const watcher = socket.watch();
  try {
    const ready = nextReadable(watcher, what);
    watcher.start();
    await ready;
  } finally {
    watcher.close();
  }
}

/** The next complete message or EOF, waiting while recv() says 'again'. */
export async function recvWait(socket: UnixSocket, what = 'a message'): Promise<Exclude<Received, { kind: 'again' }>> {
  for (;;) {
    const r = socket.recv();
    if (r.kind !== 'again') return r;
    await socketReadable(socket, what);
  }
}

/** The next connection on a listening socket. */
export async function acceptWait(listener: UnixSocket): Promise<UnixSocket> {
  for (;;) {
    const s = listener.accept();
    if (s !== null) return s;
    await socketReadable(listener, 'the listener (a connection)');
  }
}

/**
 * A node child running test/fixtures/sys/<script> with plain string arguments; its
 * stdout is JSON lines (read them in order with `next()`).
 */
export function nodeChild(script: string, args: readonly string[] = [], options: { stdio?: StdioOptions; nodeArgs?: readonly string[] } = {}): JsonChild {
  requireBuilt();
  const fixture = join(FIXTURES, 'sys', script);
  return new JsonChild(process.execPath, [...(options.nodeArgs ?? []), fixture, ...args], { name: script, stdio: options.stdio });
}

/** Runs `fn`, which must throw; returns what it threw. */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected an error, nothing was thrown');
}

/** Runs `fn`, which must throw a SystemError; returns it. */
export function systemError(fn: () => unknown): SystemError {
  const error = thrown(fn);
  expect(isSystemError(error), `not a system error: ${String(error)}`).toBe(true);
  return error as SystemError;
}
