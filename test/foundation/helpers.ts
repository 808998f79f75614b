/**
 * Shared helpers for the foundation suites: unique names, /proc/self counters, event-driven
 * waits, and child processes that speak JSON lines (fixtures in test/fixtures/foundation/).
 *
 * Waits never assert on time: every wait has a generous timeout that only turns a hang into a
 * readable failure.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { FdWatcher, Received, UnixSocket } from '../../lib/index.js';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const FIXTURES = fileURLToPath(new URL('../fixtures/foundation/', import.meta.url));
export const DIST_INDEX = join(REPO, 'dist', 'lib', 'index.js');

/** Generous: a loaded 2-core machine must never hit it. */
export const WAIT_MS = 30_000;

let counter = 0;

/** A POSIX shm name unique to this process and call. */
export function uniqueShmName(tag: string): string {
  counter += 1;
  return `/ivshmem-fnd-${tag}-${process.pid}-${counter}`;
}

/** A private temp dir (short path: socket paths must stay under 108 bytes). */
export function makeTempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `ivf-${tag}-`));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** A socket path unique to this process and call, inside `dir`. */
export function socketPath(dir: string, tag = 's'): string {
  counter += 1;
  return join(dir, `${tag}-${process.pid}-${counter}.sock`);
}

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

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
export const nextImmediate = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Polls `probe` (every few ms) until it returns something other than undefined/false. */
export async function waitFor<T>(probe: () => T | undefined | false | null, what: string, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false && value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

/** Lets the event loop turn (setImmediate) for about `ms`; returns how many turns ran. */
export async function idleTurns(ms: number): Promise<number> {
  const end = Date.now() + ms;
  let turns = 0;
  while (Date.now() < end) {
    await nextImmediate();
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

export type ChildMessage = { type: string } & Record<string, unknown>;

const live = new Set<Child>();

/**
 * A node (or other) child process whose stdout is JSON lines. `next(type)` consumes messages in
 * order; a child that exits first rejects the wait with its stderr.
 */
export class Child {
  readonly proc: ChildProcess;
  readonly messages: ChildMessage[] = [];
  stderr = '';
  stdoutText = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #cursor = 0;
  #notify: (() => void) | null = null;
  #done = false;

  constructor(command: string, args: readonly string[], options: { stdio?: StdioOptions; env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
    this.proc = spawn(command, args, {
      stdio: options.stdio ?? ['pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      cwd: options.cwd ?? REPO,
    });
    live.add(this);
    // A child that exits while we write to it must not crash the test process with EPIPE.
    this.proc.stdin?.on('error', () => {});
    this.proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    if (this.proc.stdout) {
      createInterface({ input: this.proc.stdout }).on('line', (line) => {
        this.stdoutText += `${line}\n`;
        let message: ChildMessage;
        try {
          message = JSON.parse(line) as ChildMessage;
        } catch {
          message = { type: 'text', text: line };
        }
        this.messages.push(message);
        this.#notify?.();
      });
    }
    this.exited = new Promise((resolve) => {
      this.proc.on('close', (code, signal) => {
        this.#done = true;
        live.delete(this);
        this.#notify?.();
        resolve({ code, signal });
      });
    });
  }

  /** A node child running `test/fixtures/foundation/<script>`. */
  static node(script: string, args: readonly string[] = [], options: { stdio?: StdioOptions; nodeArgs?: readonly string[] } = {}): Child {
    if (!existsSync(DIST_INDEX)) {
      throw new Error(`${DIST_INDEX} is missing: build it first (npx tsc -p tsconfig.build.json, the pretest script)`);
    }
    return new Child(process.execPath, [...(options.nodeArgs ?? []), join(FIXTURES, script), ...args], {
      ...(options.stdio ? { stdio: options.stdio } : {}),
    });
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** The next message of `type` (or of one of the types; earlier messages of other types are skipped). */
  async next(type: string | readonly string[], timeoutMs = WAIT_MS): Promise<ChildMessage> {
    const types = typeof type === 'string' ? [type] : type;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.#cursor < this.messages.length) {
        const m = this.messages[this.#cursor++]!;
        if (m.type === 'error') throw new Error(`child reported an error: ${JSON.stringify(m)}\nstderr: ${this.stderr}`);
        if (types.includes(m.type)) return m;
      }
      if (this.#done) {
        throw new Error(`child exited before sending '${types.join("' or '")}'; stdout: ${this.stdoutText}\nstderr: ${this.stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for '${types.join("' or '")}' from the child; stderr: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#notify = () => {
          clearTimeout(timer);
          this.#notify = null;
          resolve();
        };
      });
    }
  }

  /** Writes one JSON line to the child's stdin. */
  send(message: object): void {
    this.proc.stdin?.write(`${JSON.stringify(message)}\n`);
  }

  /** Waits for the child to exit on its own. */
  async exit(timeoutMs = WAIT_MS): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`child did not exit within ${timeoutMs} ms; stderr: ${this.stderr}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async kill(): Promise<void> {
    if (this.running) this.proc.kill('SIGKILL');
    await this.exited;
  }
}

/** Kills and awaits every child still running (for afterEach). */
export async function killChildren(): Promise<void> {
  await Promise.all([...live].map((c) => c.kill()));
}
