/**
 * The worker processes (parent side): `child_process.fork` of dist/bench/worker.js, one
 * request/reply at a time per command, every request bounded by a deadline, and every child
 * killed on error, timeout or the end of the run.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command, Reply } from './protocol.js';
import { packageRoot } from './paths.js';

export class BenchError extends Error {
  override name = 'BenchError';
}

/** The compiled worker script; a clear error if the TypeScript was not built. */
export function workerScript(): string {
  const script = join(packageRoot(), 'dist', 'bench', 'worker.js');
  if (!existsSync(script)) {
    throw new BenchError(`${script} does not exist: build the TypeScript first (npm run build:ts, or npm install)`);
  }
  return script;
}

type Pending = { resolve: (data: unknown) => void; reject: (error: Error) => void; what: string };

type WithoutReq<C> = C extends { req: number } ? Omit<C, 'req'> : never;
export type Request = WithoutReq<Command>;

export class Worker {
  readonly proc: ChildProcess;
  readonly index: number;
  #nextReq = 1;
  readonly #pending = new Map<number, Pending>();
  #stderr = '';
  #exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;

  constructor(script: string, index: number) {
    this.index = index;
    // execArgv: [] — never inherit a test runner's loader flags.
    this.proc = fork(script, [], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], execArgv: [], serialization: 'json' });
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-4000);
    });
    let hello!: () => void;
    let failed!: (e: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      hello = resolve;
      failed = reject;
    });
    this.ready.catch(() => {});
    this.proc.on('message', (reply: Reply) => {
      if (reply.type === 'hello') {
        hello();
        return;
      }
      const pending = this.#pending.get(reply.req);
      if (pending === undefined) return;
      this.#pending.delete(reply.req);
      if (reply.ok) pending.resolve(reply.data);
      else pending.reject(new BenchError(`worker ${this.index} (pid ${this.pid}), ${pending.what}: ${reply.error}`));
    });
    this.exited = new Promise<void>((resolve) => {
      this.proc.on('exit', (code, signal) => {
        this.#exited = { code, signal };
        const error = new BenchError(`worker ${this.index} (pid ${this.pid}) exited (code ${code}, signal ${signal})${this.diagnostics()}`);
        failed(error);
        for (const p of this.#pending.values()) p.reject(error);
        this.#pending.clear();
        resolve();
      });
    });
    this.proc.on('error', (error) => failed(error));
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get alive(): boolean {
    return this.#exited === null;
  }

  diagnostics(): string {
    const text = this.#stderr.trim();
    return text === '' ? '' : `\nworker stderr: ${text}`;
  }

  /** Sends a command; resolves with the worker's reply data. Rejects if the worker exits or answers an error. */
  request<T>(command: Request, what: string = command.type): Promise<T> {
    if (this.#exited !== null) return Promise.reject(new BenchError(`worker ${this.index} has exited${this.diagnostics()}`));
    const req = this.#nextReq++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(req, { resolve: resolve as (d: unknown) => void, reject, what });
      this.proc.send({ ...command, req } as Command, (error) => {
        if (error) {
          this.#pending.delete(req);
          reject(new BenchError(`worker ${this.index}: cannot send ${what}: ${error.message}`));
        }
      });
    });
  }

  kill(): void {
    if (this.#exited !== null) return;
    try {
      this.proc.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** The least time set-up gets (workers starting, connecting): a loaded 2-core machine has
 * taken over 0.5 s to start two, and a short cell deadline must fail the cell, not its set-up. */
const SETUP_MS = 15_000;

/** The deadline of a set-up step for a cell whose deadline is `timeoutMs`. */
export const setupDeadline = (timeoutMs: number): number => Math.max(timeoutMs, SETUP_MS);

export class WorkerPool {
  readonly #script: string;
  readonly workers: Worker[] = [];

  constructor() {
    this.#script = workerScript();
  }

  /** Makes sure at least `n` live workers exist; resolves once they all said hello (within setupDeadline). */
  async ensure(n: number, timeoutMs: number): Promise<Worker[]> {
    while (this.workers.length < n) this.workers.push(new Worker(this.#script, this.workers.length));
    const chosen = this.workers.slice(0, n);
    await withTimeout(Promise.all(chosen.map((w) => w.ready)), setupDeadline(timeoutMs), `${n} worker processes to start`);
    return chosen;
  }

  /** SIGKILLs every worker and waits for them to be gone. */
  async killAll(): Promise<void> {
    for (const w of this.workers) w.kill();
    await Promise.all(this.workers.map((w) => w.exited));
    this.workers.length = 0;
  }

  /** Asks every worker to exit; kills those that do not within a second. */
  async close(): Promise<void> {
    for (const w of this.workers) {
      if (!w.alive) continue;
      try {
        w.proc.send({ type: 'exit' } satisfies Command);
      } catch {
        w.kill();
      }
    }
    const timer = setTimeout(() => {
      for (const w of this.workers) w.kill();
    }, 1000);
    await Promise.all(this.workers.map((w) => w.exited));
    clearTimeout(timer);
    this.workers.length = 0;
  }
}

/** Rejects with a BenchError naming `what` (a function: evaluated then) if `promise` does not settle within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string | (() => string)): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    const named = (): string => (typeof what === 'string' ? what : what());
    timer = setTimeout(() => reject(new BenchError(`timed out after ${(ms / 1000).toFixed(1)} s waiting for ${named()}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
