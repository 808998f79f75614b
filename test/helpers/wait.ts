/**
 * Waiting in tests: for a promise, for a condition, for emitter events. Every wait has a
 * generous timeout that only turns a hang into a readable failure; nothing here asserts on time.
 */
import type { EventEmitter } from 'node:events';

/** The default timeout of every wait: a loaded 2-core machine must never hit it. */
export const WAIT_MS = 30_000;

/** For waits on whole runs of many messages (the channel suites): twice the default. */
export const LONG_WAIT_MS = 60_000;

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** One event-loop turn (setImmediate). */
export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A few event-loop turns and a short wait: long enough for an eventfd already written to be seen. */
export async function settle(ms = 50): Promise<void> {
  for (let i = 0; i < 5; i++) await turn();
  await sleep(ms);
  for (let i = 0; i < 5; i++) await turn();
}

const describe = (what: string | (() => string)): string => (typeof what === 'function' ? what() : what);

/** Rejects with a readable message if `promise` does not settle in time. */
export async function within<T>(promise: Promise<T>, what: string | (() => string), timeoutMs = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${describe(what)}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `probe` (every 2 ms) until it returns a truthy value, and returns that; rejects after `timeoutMs`. */
export async function waitFor<T>(
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  what: string | (() => string),
  timeoutMs = WAIT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${describe(what)}`);
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
// Events of in-process emitters (PeerServer, Peer, devices, watchers)

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

export interface Recorded {
  readonly event: string;
  readonly args: unknown[];
}

type RecordWaiter = { pred: (r: Recorded) => boolean; resolve: (r: Recorded) => void };

/**
 * Records every emission of `events` on `emitter` from now on. `waitFor` resolves with the first
 * recorded emission (past or future) that matches; nothing is consumed.
 */
export class EventRecorder {
  readonly log: Recorded[] = [];
  readonly #waiters = new Set<RecordWaiter>();
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
    let waiter: RecordWaiter;
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
