/**
 * Helpers for the doorbell suites: unique socket paths, event-driven waits with generous
 * timeouts (they only turn a hang into a readable failure, never assert on time), a tracker
 * for servers/peers/devices to close in afterEach, and child processes speaking JSON lines
 * (fixtures in test/fixtures/doorbell/, plain ESM over dist/).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import { accessSync, constants, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Peer, PeerServer, type HeaderLayout, type PeerOptions, type PeerServerOptions } from '../../lib/index.js';

export const FIXTURES = fileURLToPath(new URL('../fixtures/doorbell/', import.meta.url));

/** Generous: a loaded 2-core machine must never hit it. */
export const WAIT_MS = 30_000;

let counter = 0;

/** A socket path unique to this process and call, directly under os.tmpdir() (short). */
export function uniqueSocketPath(tag: string): string {
  counter += 1;
  return join(tmpdir(), `ivdb-${tag}-${process.pid}-${counter}.sock`);
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A few event-loop turns and a short wait: long enough for an eventfd already written to be seen. */
export async function settle(ms = 50): Promise<void> {
  for (let i = 0; i < 5; i++) await turn();
  await sleep(ms);
  for (let i = 0; i < 5; i++) await turn();
}

/** Polls `probe` until it returns a truthy value; rejects after `timeoutMs`. */
export async function waitFor<T>(
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  what: string | (() => string),
  timeoutMs = WAIT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`);
    }
    await sleep(2);
  }
}

/** Rejects with a readable message if `promise` does not settle in time. */
export async function within<T>(promise: Promise<T>, what: string, timeoutMs = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The next emission of `event` on `emitter` (its arguments), with a timeout. */
export function next<A extends unknown[]>(emitter: EventEmitter<any>, event: string, what?: string, timeoutMs = WAIT_MS): Promise<A> {
  let listener!: (...args: unknown[]) => void;
  const promise = new Promise<A>((resolve) => {
    listener = (...args: unknown[]) => resolve(args as A);
    emitter.once(event, listener);
  });
  return within(promise, what ?? `event '${event}'`, timeoutMs).finally(() => emitter.off(event, listener));
}

/** Counts emissions of `event` on `emitter` from now on (and keeps their arguments). */
export class Tally {
  readonly calls: unknown[][] = [];
  readonly #off: () => void;
  constructor(emitter: EventEmitter<any>, event: string) {
    const listener = (...args: unknown[]): void => {
      this.calls.push(args);
    };
    emitter.on(event, listener);
    this.#off = () => emitter.off(event, listener);
  }
  get count(): number {
    return this.calls.length;
  }
  stop(): void {
    this.#off();
  }
}

// ---------------------------------------------------------------------------------------------
// Servers and peers of one test, closed in afterEach

export class Resources {
  readonly #closers: (() => void)[] = [];

  listen(tag: string, options: PeerServerOptions = {}): PeerServer {
    const server = PeerServer.listen({ socketPath: uniqueSocketPath(tag), handleSignals: false, ...options });
    this.#closers.push(() => server.close());
    return server;
  }

  async connect(server: PeerServer | string, options: PeerOptions = {}): Promise<Peer> {
    const path = typeof server === 'string' ? server : server.socketPath;
    const peer = await Peer.connect(path, { timeout: WAIT_MS, ...options });
    this.#closers.push(() => peer.close());
    return peer;
  }

  /** Anything else with a close(): devices, doorbells. Closed before peers and servers registered earlier. */
  track<T extends { close(): void }>(thing: T): T {
    this.#closers.push(() => thing.close());
    return thing;
  }

  closeAll(): void {
    const errors: unknown[] = [];
    for (const close of this.#closers.splice(0).reverse()) {
      try {
        close();
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'closing test resources failed');
  }
}

/** Waits until `peer` knows every ID in `ids` (peer-joined seen), so it can ring them. */
export async function knowsAll(peer: Peer, ids: readonly number[]): Promise<void> {
  await waitFor(
    () => ids.every((id) => id === peer.id || peer.vectorsOf(id) > 0),
    () => `peer ${peer.id} to know peers ${ids.join(', ')} (knows ${peer.peers().map((p) => p.id).join(', ')})`,
  );
}

// ---------------------------------------------------------------------------------------------
// Direct views of the bitmask header in the server's shared memory

const bitOf = (id: number): bigint => 1n << BigInt(id & 63);

function word(buffer: ArrayBuffer, offset: number, id: number): bigint {
  return BigInt.asUintN(64, Atomics.load(new BigInt64Array(buffer, offset, 1 + (id >> 6)), id >> 6));
}

export function pendingBit(buffer: ArrayBuffer, layout: HeaderLayout, id: number): boolean {
  return (word(buffer, layout.pendingOffset, id) & bitOf(id)) !== 0n;
}

export function liveBit(buffer: ArrayBuffer, layout: HeaderLayout, id: number): boolean {
  return (word(buffer, layout.liveOffset, id) & bitOf(id)) !== 0n;
}

/** The IDs whose bits are set in one bit set of the header. */
export function bitIds(buffer: ArrayBuffer, layout: HeaderLayout, which: 'pending' | 'live'): number[] {
  const words = new BigInt64Array(buffer, which === 'pending' ? layout.pendingOffset : layout.liveOffset, layout.words);
  const out: number[] = [];
  for (let w = 0; w < layout.words; w++) {
    const value = BigInt.asUintN(64, Atomics.load(words, w));
    for (let b = 0; b < 64; b++) if ((value >> BigInt(b)) & 1n) out.push(w * 64 + b);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Child processes speaking JSON lines

export type ChildMessage = { type: string } & Record<string, any>;

const children = new Set<JsonChild>();

type Waiter = { pred: (m: ChildMessage) => boolean; resolve: (m: ChildMessage) => void; reject: (e: Error) => void };

export class JsonChild {
  readonly proc: ChildProcess;
  readonly name: string;
  readonly messages: ChildMessage[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #stderr = '';
  #exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  readonly #waiters = new Set<Waiter>();
  #seq = 0;

  /** Runs `node <FIXTURES/script> '<json arg>'`, optionally behind a wrapper command (`prefix`). */
  constructor(script: string, arg: unknown, name: string, prefix: readonly string[] = []) {
    this.name = name;
    const argv = [...prefix, process.execPath, join(FIXTURES, script), JSON.stringify(arg)];
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(this);
    this.proc.stdin!.on('error', () => {});
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (chunk: string) => {
      this.#stderr += chunk;
    });
    const lines = createInterface({ input: this.proc.stdout! });
    lines.on('line', (line) => {
      let message: ChildMessage;
      try {
        message = JSON.parse(line) as ChildMessage;
      } catch {
        message = { type: 'unparsed', line };
      }
      this.messages.push(message);
      for (const w of [...this.#waiters]) {
        if (w.pred(message)) {
          this.#waiters.delete(w);
          w.resolve(message);
        }
      }
    });
    this.exited = new Promise((resolve) => {
      this.proc.on('close', (code, signal) => {
        this.#exit = { code, signal };
        children.delete(this);
        const error = new Error(`${this.name} (pid ${this.proc.pid}) exited (code ${code}, signal ${signal})${this.diagnostics()}`);
        for (const w of [...this.#waiters]) w.reject(error);
        this.#waiters.clear();
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get alive(): boolean {
    return this.#exit === null;
  }

  get stderr(): string {
    return this.#stderr;
  }

  diagnostics(): string {
    const fatal = this.messages.filter((m) => m.type === 'fatal').map((m) => String(m.message));
    const parts: string[] = [];
    if (fatal.length > 0) parts.push(`fatal: ${fatal.join('\n')}`);
    if (this.#stderr.trim() !== '') parts.push(`stderr: ${this.#stderr.trim().slice(-4000)}`);
    return parts.length === 0 ? '' : `\n${parts.join('\n')}`;
  }

  /** The first message (past or future) matching `pred`; rejects if the child exits first. */
  waitFor(pred: (m: ChildMessage) => boolean, what: string, timeoutMs = WAIT_MS): Promise<ChildMessage> {
    const found = this.messages.find(pred);
    if (found !== undefined) return Promise.resolve(found);
    if (this.#exit !== null) return Promise.reject(new Error(`${this.name} exited before ${what}${this.diagnostics()}`));
    let waiter!: Waiter;
    const promise = new Promise<ChildMessage>((resolve, reject) => {
      waiter = { pred, resolve, reject };
      this.#waiters.add(waiter);
    });
    return within(promise, `${this.name}: ${what}`, timeoutMs).finally(() => this.#waiters.delete(waiter));
  }

  waitForType(type: string, timeoutMs = WAIT_MS): Promise<ChildMessage> {
    return this.waitFor((m) => m.type === type, `a '${type}' line`, timeoutMs);
  }

  send(command: Record<string, unknown>): void {
    this.proc.stdin!.write(`${JSON.stringify(command)}\n`);
  }

  /** Sends a command with a fresh `seq`; resolves with its reply (a reply with `error` rejects). */
  async request(command: Record<string, unknown>, timeoutMs = WAIT_MS): Promise<ChildMessage> {
    const seq = ++this.#seq;
    this.send({ ...command, seq });
    const reply = await this.waitFor((m) => m.type === 'reply' && m.seq === seq, `the reply to ${JSON.stringify(command)}`, timeoutMs);
    if (reply.error !== undefined) throw new Error(`${this.name}: ${reply.error.name}: ${reply.error.message} (${reply.error.code})`);
    return reply;
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.#exit === null) {
      try {
        this.proc.kill(signal);
      } catch {
        // already gone
      }
    }
    await within(this.exited, `${this.name} to exit after ${signal}`);
  }
}

/** Socket files of server children, removed once those are gone (a SIGKILLed server leaves its file). */
const childSockets = new Set<string>();

/**
 * For afterEach: asks every child still running to leave (stdin EOF: each fixture closes and
 * exits), SIGKILLs those still there after 2 s, waits for all, and removes server children's
 * socket files.
 */
export async function killAllChildren(): Promise<void> {
  const running = [...children];
  for (const c of running) c.proc.stdin!.end();
  await within(Promise.all(running.map((c) => c.exited)), 'children to exit on stdin EOF', 2000).catch(() => {});
  await Promise.all([...children].map((c) => c.kill('SIGKILL')));
  for (const path of childSockets) rmSync(path, { force: true });
  childSockets.clear();
}

/** A PeerServer in a child process (test/fixtures/doorbell/server.mjs), listening once this resolves. */
export async function startServerChild(
  options: { size?: number; vectors?: number; maxPeers?: number; bitmask?: boolean; socketPath?: string },
  name = 'server child',
): Promise<JsonChild & { socketPath: string; listening: ChildMessage }> {
  const socketPath = options.socketPath ?? uniqueSocketPath('srv');
  childSockets.add(socketPath);
  const child = new JsonChild('server.mjs', { ...options, socketPath }, name);
  const listening = await child.waitForType('listening');
  return Object.assign(child, { socketPath, listening });
}

// ---------------------------------------------------------------------------------------------
// strace: required in CI, skipped (with a message) elsewhere when missing

export const STRACE_MISSING_MESSAGE = 'strace not found on PATH: syscall-count test skipped. Install with `apt-get install -y strace`.';

function isCi(): boolean {
  const v = process.env.CI;
  if (v === undefined) return false;
  const t = v.trim().toLowerCase();
  return t !== '' && t !== '0' && t !== 'false' && t !== 'no';
}

/** Path of strace, or null (skip) when absent; in CI (`CI` set and not ''/0/false/no) absent throws. */
export function requireStraceOrSkip(): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, 'strace');
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  if (isCi()) throw new Error(`strace is required in CI (CI=${process.env.CI}): not found on PATH. Install with \`apt-get install -y strace\`.`);
  return null;
}
