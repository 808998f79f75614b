/**
 * Helpers for the peer suites: unique socket paths and shm names, event recorders with
 * awaitable predicates, and child processes (test/fixtures/peers/*.mjs) that speak JSON lines.
 *
 * Every wait has a generous timeout that only turns a hang into a readable failure; nothing
 * here asserts on time. Children are tracked: call `killAllChildren()` in afterEach.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const FIXTURES = fileURLToPath(new URL('../fixtures/peers/', import.meta.url));
export const PEER_CHILD = join(FIXTURES, 'peer-child.mjs');
export const SERVER_CHILD = join(FIXTURES, 'server-child.mjs');

/** Generous: a loaded 2-core machine must never hit it. */
export const WAIT_MS = 30_000;

let counter = 0;

/** A socket path unique to this process and call, directly under os.tmpdir() (short: < 108 bytes). */
export function uniqueSocketPath(tag: string): string {
  counter += 1;
  return join(tmpdir(), `ivp-${tag}-${process.pid}-${counter}.sock`);
}

/** A POSIX shm name unique to this process and call. */
export function uniqueShmName(tag: string): string {
  counter += 1;
  return `/ivp-${tag}-${process.pid}-${counter}`;
}

export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` (every few ms) until it returns a truthy value; rejects after `timeoutMs`. */
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
    await sleep(5);
  }
}

/** Rejects `promise` with a readable message if it does not settle in time. */
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

// ---------------------------------------------------------------------------------------------
// Recording events of in-process emitters (PeerServer, Peer)

export interface Recorded {
  readonly event: string;
  readonly args: unknown[];
}

type Waiter = { pred: (r: Recorded) => boolean; resolve: (r: Recorded) => void };

/**
 * Records every emission of `events` on `emitter` from now on. `waitFor` resolves with the first
 * recorded emission (past or future) that matches; nothing is consumed.
 */
export class EventRecorder {
  readonly log: Recorded[] = [];
  readonly #waiters = new Set<Waiter>();
  readonly #detach: (() => void)[] = [];

  constructor(emitter: EventEmitter<any>, events: readonly string[]) {
    for (const event of events) {
      const listener = (...args: unknown[]): void => this.#record({ event, args });
      emitter.on(event, listener);
      this.#detach.push(() => emitter.off(event, listener));
    }
  }

  #record(r: Recorded): void {
    this.log.push(r);
    for (const w of [...this.#waiters]) {
      if (w.pred(r)) {
        this.#waiters.delete(w);
        w.resolve(r);
      }
    }
  }

  /** Emissions of `event` so far (their argument lists). */
  all(event: string): unknown[][] {
    return this.log.filter((r) => r.event === event).map((r) => r.args);
  }

  waitFor(event: string, pred: (...args: any[]) => boolean = () => true, what?: string, timeoutMs = WAIT_MS): Promise<unknown[]> {
    const match = (r: Recorded): boolean => r.event === event && pred(...r.args);
    const found = this.log.find(match);
    if (found !== undefined) return Promise.resolve(found.args);
    let waiter: Waiter;
    const promise = new Promise<Recorded>((resolve) => {
      waiter = { pred: match, resolve };
      this.#waiters.add(waiter);
    });
    return within(promise, what ?? `event '${event}'`, timeoutMs)
      .then((r) => r.args)
      .finally(() => this.#waiters.delete(waiter));
  }

  stop(): void {
    for (const d of this.#detach.splice(0)) d();
  }
}

// ---------------------------------------------------------------------------------------------
// Child processes speaking JSON lines

export type ChildMessage = { type: string } & Record<string, any>;

const children = new Set<JsonChild>();

type MessageWaiter = { pred: (m: ChildMessage) => boolean; resolve: (m: ChildMessage) => void; reject: (e: Error) => void };

export class JsonChild {
  readonly proc: ChildProcess;
  readonly name: string;
  /** Every JSON line received, in order. */
  readonly messages: ChildMessage[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #stderr = '';
  #exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  readonly #waiters = new Set<MessageWaiter>();
  #seq = 0;

  /** `prefix`: a wrapper command run before node (e.g. ['prlimit', '--nofile=256:256', '--']). */
  constructor(script: string, arg: unknown, name: string, prefix: readonly string[] = []) {
    this.name = name;
    const argv = [...prefix, process.execPath, script, JSON.stringify(arg)];
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(this);
    this.proc.stdin!.on('error', () => {}); // EPIPE once the child is gone
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
        const error = new Error(`${this.name} (pid ${this.proc.pid}) exited (code ${code}, signal ${signal})${this.#diagnostics()}`);
        for (const w of [...this.#waiters]) w.reject(error);
        this.#waiters.clear();
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get stderr(): string {
    return this.#stderr;
  }

  get alive(): boolean {
    return this.#exit === null;
  }

  #diagnostics(): string {
    const fatal = this.messages.filter((m) => m.type === 'fatal').map((m) => String(m.message));
    const parts = [];
    if (fatal.length > 0) parts.push(`fatal: ${fatal.join('\n')}`);
    if (this.#stderr.trim() !== '') parts.push(`stderr: ${this.#stderr.trim()}`);
    return parts.length === 0 ? '' : `\n${parts.join('\n')}`;
  }

  /** The first message (already received or future) matching `pred`. Nothing is consumed. */
  waitFor(pred: (m: ChildMessage) => boolean, what: string, timeoutMs = WAIT_MS): Promise<ChildMessage> {
    const found = this.messages.find(pred);
    if (found !== undefined) return Promise.resolve(found);
    if (this.#exit !== null) {
      return Promise.reject(new Error(`${this.name} exited before ${what}${this.#diagnostics()}`));
    }
    let waiter!: MessageWaiter;
    const promise = new Promise<ChildMessage>((resolve, reject) => {
      waiter = { pred, resolve, reject };
      this.#waiters.add(waiter);
    });
    return within(promise, `${this.name}: ${what}`, timeoutMs).finally(() => this.#waiters.delete(waiter));
  }

  waitForType(type: string, what = `a '${type}' line`, timeoutMs = WAIT_MS): Promise<ChildMessage> {
    return this.waitFor((m) => m.type === type, what, timeoutMs);
  }

  /** Sends a command line without waiting. */
  send(command: Record<string, unknown>): void {
    this.proc.stdin!.write(`${JSON.stringify(command)}\n`);
  }

  /** Sends a command with a fresh `seq` and resolves with its reply; a reply with `error` rejects. */
  async request(command: Record<string, unknown>, timeoutMs = WAIT_MS): Promise<ChildMessage> {
    const seq = ++this.#seq;
    this.send({ ...command, seq });
    const reply = await this.waitFor((m) => m.type === 'reply' && m.seq === seq, `the reply to ${JSON.stringify(command).slice(0, 80)}`, timeoutMs);
    if (reply.error !== undefined) {
      const e = new Error(`${this.name}: ${reply.error.name}: ${reply.error.message}`) as Error & { code?: string; remoteName?: string };
      e.code = reply.error.code;
      e.remoteName = reply.error.name;
      throw e;
    }
    return reply;
  }

  /** Sends a signal (default SIGKILL) and waits for the exit. */
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

export interface Ring {
  peer: number;
  vector: number;
  times?: number;
}

/** A `Peer` in a child process (test/fixtures/peers/peer-child.mjs). */
export class PeerChild extends JsonChild {
  id = -1;
  ready: ChildMessage | null = null;

  private constructor(socketPath: string, options: { vectors?: number; timeout?: number }, name: string) {
    super(PEER_CHILD, { socketPath, ...options }, name);
  }

  /** Spawns a peer child without waiting for it (see `whenReady()`). */
  static spawn(socketPath: string, options: { vectors?: number; timeout?: number; name?: string } = {}): PeerChild {
    const { name, ...rest } = options;
    return new PeerChild(socketPath, rest, name ?? 'peer child');
  }

  /** Spawns a peer child and waits until it is connected (its 'ready' line). */
  static async start(socketPath: string, options: { vectors?: number; timeout?: number; name?: string } = {}): Promise<PeerChild> {
    const child = PeerChild.spawn(socketPath, options);
    await child.whenReady();
    return child;
  }

  /**
   * Waits for the connect outcome: resolves on 'ready'; on 'connect-failed' kills the child and
   * rejects with an Error carrying the child's error `code` (and `remoteName`).
   */
  async whenReady(): Promise<this> {
    const first = await this.waitFor((m) => m.type === 'ready' || m.type === 'connect-failed', 'connecting');
    if (first.type !== 'ready') {
      await this.kill();
      const e = new Error(`${this.name} could not connect: ${first.name} ${first.code} ${first.message}`) as Error & {
        code?: string;
        remoteName?: string;
      };
      e.code = first.code;
      e.remoteName = first.name;
      throw e;
    }
    this.ready = first;
    this.id = first.id as number;
    return this;
  }

  /** IDs announced to this child: those present at connect plus later joins, minus leaves. */
  knownPeers(): number[] {
    const known = new Set<number>((this.ready?.peers as { id: number }[] | undefined)?.map((p) => p.id) ?? []);
    for (const m of this.messages) {
      if (m.type === 'peer-joined') known.add(m.id as number);
      if (m.type === 'peer-left') known.delete(m.id as number);
    }
    return [...known].sort((a, b) => a - b);
  }

  waitForJoin(id: number): Promise<ChildMessage> {
    return this.waitFor((m) => m.type === 'peer-joined' && m.id === id, `peer-joined ${id}`);
  }

  waitForLeave(id: number): Promise<ChildMessage> {
    return this.waitFor((m) => m.type === 'peer-left' && m.id === id, `peer-left ${id}`);
  }

  /** Interrupt counts received per vector (sum of the coalesced counts), from the 'interrupt' lines. */
  interruptTotals(vectors: number): number[] {
    const totals = new Array<number>(vectors).fill(0);
    for (const m of this.messages) {
      if (m.type !== 'interrupt') continue;
      const v = m.vector as number;
      totals[v] = (totals[v] ?? 0) + (m.count as number);
    }
    return totals;
  }

  async ring(rings: Ring[]): Promise<number> {
    return (await this.request({ cmd: 'ring', rings })).rung as number;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    await this.request({ cmd: 'write', offset, base64: Buffer.from(data).toString('base64') });
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return Buffer.from((await this.request({ cmd: 'read', offset, length })).base64 as string, 'base64');
  }

  async peers(): Promise<{ id: number; vectors: number }[]> {
    return (await this.request({ cmd: 'peers' })).peers as { id: number; vectors: number }[];
  }

  /** Totals the child itself counted, per vector (absent vectors are 0). */
  async stats(vectors: number): Promise<number[]> {
    const counts = (await this.request({ cmd: 'stats' })).interrupts as Record<string, number>;
    return Array.from({ length: vectors }, (_, v) => counts[String(v)] ?? 0);
  }

  /** Asks the child to close its peer and exit; resolves once it has exited. */
  async quit(): Promise<void> {
    await this.request({ cmd: 'quit' });
    await within(this.exited, `${this.name} to exit after quit`);
  }
}

/** A PeerServer in a child process (test/fixtures/peers/server-child.mjs). */
export async function startServerChild(
  options: Record<string, unknown>,
  name = 'server child',
  prefix: readonly string[] = [],
): Promise<JsonChild> {
  const child = new JsonChild(SERVER_CHILD, options, name, prefix);
  await child.waitForType('listening');
  return child;
}
