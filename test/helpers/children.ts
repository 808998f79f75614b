/**
 * Child processes of the tests, tracked so that afterEach can end whatever is still running
 * (`killAllChildren()`).
 *
 * - `Child`: any command; its exit, signals, a wait for the exit with a timeout.
 * - `JsonChild`: a child whose stdout is JSON lines (`{ type, ... }`), usually a fixture under
 *   test/fixtures/ (plain ESM over the built dist/, see test/fixtures/common.mjs) that takes its
 *   options as JSON in argv[2] and commands on stdin (`{ cmd, seq, ... }`, replied to with
 *   `{ type: 'reply', seq, ... }`).
 * - `startServerChild()`: a PeerServer in a child (test/fixtures/server.mjs).
 *
 * Every wait has a generous timeout that only turns a hang into a readable failure, with what
 * the child printed on stderr and any 'fatal' line it wrote.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { rmSync } from 'node:fs';
import { basename, isAbsolute, join } from 'node:path';
import { createInterface } from 'node:readline';
import { FIXTURES, REPO, requireBuilt, uniqueSocketPath } from './paths.js';
import { WAIT_MS, within } from './wait.js';

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ChildOptions {
  /** For failure messages (default: the command's base name). */
  name?: string;
  /** Default ['pipe', 'pipe', 'pipe']. */
  stdio?: StdioOptions;
  env?: NodeJS.ProcessEnv;
  /** Default: the repository. */
  cwd?: string;
  /** Default timeout of this child's waits (default WAIT_MS). */
  waitMs?: number;
}

/** Children still running. */
const live = new Set<Child>();
/** Files children leave behind when SIGKILLed (a server's socket), removed once they are gone. */
const leftovers = new Set<string>();

export class Child {
  readonly proc: ChildProcess;
  readonly name: string;
  /** Resolves once the child has exited and its output is read. */
  readonly exited: Promise<Exit>;
  readonly waitMs: number;
  #exit: Exit | null = null;

  constructor(command: string, args: readonly string[], options: ChildOptions = {}) {
    this.name = options.name ?? basename(command);
    this.waitMs = options.waitMs ?? WAIT_MS;
    this.proc = spawn(command, args, {
      stdio: options.stdio ?? ['pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      cwd: options.cwd ?? REPO,
    });
    live.add(this);
    // A child that exits while we write to it must not crash the test process with EPIPE.
    this.proc.stdin?.on('error', () => {});
    this.exited = new Promise((resolve) => {
      this.proc.on('close', (code, signal) => {
        this.#exit = { code, signal };
        live.delete(this);
        this.closed(this.#exit);
        resolve(this.#exit);
      });
    });
  }

  /** Called once the child has exited and its output is read, before `exited` resolves. */
  protected closed(_exit: Exit): void {}

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  /** Not closed yet: the process runs, or its output is still being read. */
  get alive(): boolean {
    return this.#exit === null;
  }

  /** The process has not exited (as far as its 'exit' event tells; `alive` lasts until 'close'). */
  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** What the child said, for failure messages ('' or starting with a newline). */
  diagnostics(): string {
    return '';
  }

  /** Sends `signal` if the child is still running; does not wait. */
  signal(signal: NodeJS.Signals): void {
    if (this.#exit !== null) return;
    try {
      this.proc.kill(signal);
    } catch {
      // already gone
    }
  }

  /** Sends a signal (default SIGKILL) and waits for the exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    this.signal(signal);
    await within(this.exited, `${this.name} to exit after ${signal}`, this.waitMs);
  }

  /** Waits for the child to exit on its own. */
  exit(timeoutMs = this.waitMs): Promise<Exit> {
    return within(this.exited, () => `${this.name} to exit${this.diagnostics()}`, timeoutMs);
  }
}

/**
 * For afterEach: ends every child still running and waits for them, then removes the socket
 * files of server children (a SIGKILLed server leaves its file). SIGKILL at once; with
 * `graceMs`, stdin EOF first (each fixture then closes and exits) and SIGKILL for those still
 * there after it.
 */
export async function killAllChildren(options: { graceMs?: number } = {}): Promise<void> {
  const graceMs = options.graceMs ?? 0;
  if (graceMs > 0) {
    const running = [...live];
    for (const c of running) c.proc.stdin?.end();
    await within(Promise.all(running.map((c) => c.exited)), 'children to exit on stdin EOF', graceMs).catch(() => {});
  }
  await Promise.all([...live].map((c) => c.kill('SIGKILL')));
  for (const path of leftovers) rmSync(path, { force: true });
  leftovers.clear();
}

// ---------------------------------------------------------------------------------------------
// Children speaking JSON lines

export type ChildMessage = { type: string } & Record<string, any>;

/** A remote error ({ name, code, message } in a reply or a 'connect-failed' line) as an Error. */
export type RemoteError = Error & { code?: string; remoteName?: string };

type Waiter = {
  pred: (m: ChildMessage, index: number) => boolean;
  resolve: (m: ChildMessage) => void;
  reject: (e: Error) => void;
};

export class JsonChild extends Child {
  /** Every JSON line received, in order (a line that is not JSON: { type: 'unparsed', line }). */
  readonly messages: ChildMessage[] = [];
  /** The 'ready' line, once `whenReady()` has seen it; `id` is its peer ID. */
  ready: ChildMessage | null = null;
  id = -1;
  #stderr = '';
  readonly #waiters = new Set<Waiter>();
  #seq = 0;
  #cursor = 0;

  constructor(command: string, args: readonly string[], options: ChildOptions = {}) {
    super(command, args, options);
    this.proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stderr += chunk;
    });
    if (this.proc.stdout) createInterface({ input: this.proc.stdout }).on('line', (line) => this.#receive(line));
  }

  /**
   * Runs `node <script> '<arg as JSON>'` (`script` relative to test/fixtures/ unless absolute),
   * behind `prefix` when given: a wrapper command such as ['prlimit', '--nofile=256:256', '--'].
   */
  static fixture(script: string, arg: unknown, name: string, options: ChildOptions & { prefix?: readonly string[] } = {}): JsonChild {
    const { prefix = [], ...rest } = options;
    const [command, ...args] = fixtureCommand(script, arg, prefix);
    return new JsonChild(command!, args, { ...rest, name });
  }

  #receive(line: string): void {
    let message: ChildMessage;
    try {
      message = JSON.parse(line) as ChildMessage;
    } catch {
      message = { type: 'unparsed', line };
    }
    this.messages.push(message);
    const index = this.messages.length - 1;
    for (const w of [...this.#waiters]) {
      if (w.pred(message, index)) {
        this.#waiters.delete(w);
        w.resolve(message);
      }
    }
  }

  protected override closed(exit: Exit): void {
    const error = new Error(`${this.name} (pid ${this.pid}) exited (code ${exit.code}, signal ${exit.signal})${this.diagnostics()}`);
    for (const w of this.#waiters) w.reject(error);
    this.#waiters.clear();
  }

  get stderr(): string {
    return this.#stderr;
  }

  override diagnostics(): string {
    const fatal = this.messages.filter((m) => m.type === 'fatal').map((m) => String(m.message));
    const parts: string[] = [];
    if (fatal.length > 0) parts.push(`fatal: ${fatal.join('\n')}`);
    if (this.#stderr.trim() !== '') parts.push(`stderr: ${this.#stderr.trim().slice(-4000)}`);
    return parts.length === 0 ? '' : `\n${parts.join('\n')}`;
  }

  /** The first message (already received or future) matching `pred`; rejects if the child exits first. Nothing is consumed. */
  waitFor(pred: (m: ChildMessage, index: number) => boolean, what: string, timeoutMs = this.waitMs): Promise<ChildMessage> {
    const found = this.messages.find(pred);
    if (found !== undefined) return Promise.resolve(found);
    if (!this.alive) return Promise.reject(new Error(`${this.name} exited before ${what}${this.diagnostics()}`));
    let waiter!: Waiter;
    const promise = new Promise<ChildMessage>((resolve, reject) => {
      waiter = { pred, resolve, reject };
      this.#waiters.add(waiter);
    });
    return within(promise, `${this.name}: ${what}`, timeoutMs).finally(() => this.#waiters.delete(waiter));
  }

  waitForType(type: string, timeoutMs = this.waitMs): Promise<ChildMessage> {
    return this.waitFor((m) => m.type === type, `a '${type}' line`, timeoutMs);
  }

  /**
   * Consumes messages in order (a cursor of its own, apart from `waitFor`): the next one of
   * `type` (or of one of the types), skipping others. A 'fatal' line on the way rejects.
   */
  async next(type: string | readonly string[], timeoutMs = this.waitMs): Promise<ChildMessage> {
    const types = typeof type === 'string' ? [type] : type;
    const from = this.#cursor;
    const what = `'${types.join("' or '")}'`;
    const m = await this.waitFor((m, i) => i >= from && (m.type === 'fatal' || types.includes(m.type)), what, timeoutMs);
    this.#cursor = this.messages.indexOf(m, from) + 1;
    if (m.type === 'fatal') throw new Error(`${this.name} failed before ${what}${this.diagnostics()}`);
    return m;
  }

  /** Waits for the connect outcome: resolves on 'ready' (its `id` set); on 'connect-failed' kills the child and rejects with its error. */
  async whenReady(): Promise<this> {
    const first = await this.waitFor((m) => m.type === 'ready' || m.type === 'connect-failed', 'connecting');
    if (first.type !== 'ready') {
      await this.kill();
      throw remoteError(`${this.name} could not connect: ${first.name} ${first.code} ${first.message}`, { name: first.name, code: first.code });
    }
    this.ready = first;
    this.id = first.id as number;
    return this;
  }

  /** Writes one command line without waiting. */
  send(command: object): void {
    this.proc.stdin?.write(`${JSON.stringify(command)}\n`);
  }

  /** Sends a command with a fresh `seq` and resolves with its reply; a reply with `error` rejects (a RemoteError). */
  async request(command: Record<string, unknown>, timeoutMs = this.waitMs): Promise<ChildMessage> {
    const seq = ++this.#seq;
    this.send({ ...command, seq });
    const reply = await this.waitFor((m) => m.type === 'reply' && m.seq === seq, `the reply to ${JSON.stringify(command).slice(0, 80)}`, timeoutMs);
    if (reply.error !== undefined && reply.error !== null) {
      const e = reply.error as { name?: string; code?: string; message?: string };
      throw remoteError(`${this.name}: ${e.name}: ${e.message} (${e.code})${this.diagnostics()}`, e);
    }
    return reply;
  }
}

function remoteError(message: string, from: { name?: string; code?: string }): RemoteError {
  const e: RemoteError = new Error(message);
  e.code = from.code;
  e.remoteName = from.name;
  return e;
}

/** The command line of `node <script> '<arg as JSON>'` (see `JsonChild.fixture`). */
export function fixtureCommand(script: string, arg: unknown, prefix: readonly string[] = []): string[] {
  requireBuilt();
  return [...prefix, process.execPath, isAbsolute(script) ? script : join(FIXTURES, script), JSON.stringify(arg)];
}

// ---------------------------------------------------------------------------------------------

export type ServerChild = JsonChild & { socketPath: string; listening: ChildMessage };

/**
 * A PeerServer in a child process (test/fixtures/server.mjs: `PeerServer.listen(options)`),
 * listening once this resolves; for servers that may crash, be SIGKILLed or SIGSTOPped. Its
 * socket file (a fresh path unless `options.socketPath`) is removed by killAllChildren().
 */
export async function startServerChild(
  options: Record<string, unknown> & { socketPath?: string },
  name = 'server child',
  spawnOptions: Omit<ChildOptions, 'name'> & { prefix?: readonly string[] } = {},
): Promise<ServerChild> {
  const socketPath = options.socketPath ?? uniqueSocketPath('srv');
  leftovers.add(socketPath);
  const child = JsonChild.fixture('server.mjs', { ...options, socketPath }, name, spawnOptions);
  const listening = await child.waitForType('listening');
  return Object.assign(child, { socketPath, listening });
}
