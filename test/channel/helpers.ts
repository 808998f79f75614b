/**
 * Helpers for the channel suites: unique socket paths, event-driven waits with generous timeouts
 * (they turn a hang into a readable failure and never assert on time), servers and peers closed
 * in afterEach, and child processes speaking JSON lines (fixtures in test/fixtures/channel/,
 * plain ESM over dist/).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Peer, PeerServer, type DoorbellCounters, type PeerServerOptions } from '../../lib/index.js';

export const FIXTURES = fileURLToPath(new URL('../fixtures/channel/', import.meta.url));

/** Generous: only turns a hang into a failure; a loaded 2-core machine never gets near it. */
export const WAIT_MS = 60_000;

let counter = 0;

/** A socket path unique to this process and call, directly under os.tmpdir(). */
export function uniqueSocketPath(tag: string): string {
  counter += 1;
  return join(tmpdir(), `ivch-${tag}-${process.pid}-${counter}.sock`);
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

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

/** Polls `probe` until truthy; rejects after `timeoutMs`. */
export async function waitFor<T>(probe: () => T | undefined | null | false, what: string, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
}

/** Settles a promise into a tagged result (to assert on a rejection without an unhandled one). */
export async function settled<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  try {
    return { ok: true, value: await promise };
  } catch (error) {
    return { ok: false, error };
  }
}

// ---------------------------------------------------------------------------------------------
// Servers and peers of one test, closed in afterEach (last opened, first closed)

export class Resources {
  readonly #closers: (() => void)[] = [];

  listen(tag: string, options: PeerServerOptions = {}): PeerServer {
    const server = PeerServer.listen({ socketPath: uniqueSocketPath(tag), handleSignals: false, bitmask: true, size: 1 << 20, ...options });
    this.#closers.push(() => server.close());
    return server;
  }

  async connect(server: PeerServer | string): Promise<Peer> {
    const path = typeof server === 'string' ? server : server.socketPath;
    const peer = await Peer.connect(path, { bitmask: true, timeout: WAIT_MS });
    this.#closers.push(() => peer.close());
    return peer;
  }

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

// ---------------------------------------------------------------------------------------------
// Child processes speaking JSON lines

export type ChildMessage = { type: string } & Record<string, any>;

export interface ErrorInfo {
  name: string;
  code?: string;
  message: string;
  peer?: number;
}

type Waiter = { pred: (m: ChildMessage) => boolean; resolve: (m: ChildMessage) => void; reject: (e: Error) => void };

const children = new Set<JsonChild>();

export class JsonChild {
  readonly proc: ChildProcess;
  readonly name: string;
  readonly messages: ChildMessage[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #stderr = '';
  #exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  readonly #waiters = new Set<Waiter>();
  #seq = 0;
  id = -1;

  /** Runs `node <FIXTURES/script> '<json arg>'`. */
  constructor(script: string, arg: unknown, name: string) {
    this.name = name;
    this.proc = spawn(process.execPath, [join(FIXTURES, script), JSON.stringify(arg)], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(this);
    this.proc.stdin!.on('error', () => {});
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (chunk: string) => {
      this.#stderr += chunk;
    });
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
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

  /** Spawns a fixture connected to `server` and waits for its 'ready' line (its peer ID). */
  static async start(script: string, server: PeerServer, name: string): Promise<JsonChild> {
    const child = new JsonChild(script, { socketPath: server.socketPath }, name);
    child.id = (await child.waitForType('ready')).id as number;
    return child;
  }

  get alive(): boolean {
    return this.#exit === null;
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

  send(command: Record<string, unknown>): number {
    const seq = ++this.#seq;
    this.proc.stdin!.write(`${JSON.stringify({ ...command, seq })}\n`);
    return seq;
  }

  /** Sends a command; resolves with its reply (which may carry `error`: the caller asserts on it). */
  request(command: Record<string, unknown>, timeoutMs = WAIT_MS): Promise<ChildMessage> {
    const seq = this.send(command);
    return this.waitFor((m) => m.type === 'reply' && m.seq === seq, `the reply to ${command.cmd}`, timeoutMs);
  }

  /** Like request(), but a reply with `error` rejects. */
  async call(command: Record<string, unknown>, timeoutMs = WAIT_MS): Promise<ChildMessage> {
    const reply = await this.request(command, timeoutMs);
    if (reply.error !== undefined && reply.error !== null) {
      const e = reply.error as ErrorInfo;
      throw new Error(`${this.name}: ${e.name}: ${e.message} (${e.code})${this.diagnostics()}`);
    }
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

/** SIGKILLs every child still running and waits for them. For afterEach. */
export async function killAllChildren(): Promise<void> {
  await Promise.all([...children].map((c) => c.kill('SIGKILL')));
}

export function sumCounters(list: readonly DoorbellCounters[]): DoorbellCounters {
  const total: DoorbellCounters = { rings: 0, suppressed: 0, signals: 0, eventfdWrites: 0, eventfdReads: 0, wakeups: 0, spurious: 0, interrupts: 0, acks: 0 };
  for (const c of list) for (const k of Object.keys(total) as (keyof DoorbellCounters)[]) total[k] += c[k];
  return total;
}

export const rate = (messages: number, ms: number): string => `${Math.round(messages / (ms / 1000)).toLocaleString('en-US')} messages/s`;

/** Prints one line of measurements (vitest shows console output of the test process). */
export function report(line: string): void {
  console.log(`[channel] ${line}`);
}
