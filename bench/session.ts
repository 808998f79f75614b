/**
 * One network for a group of cells of the same shape: a real PeerServer (bitmask mode: its
 * header is harmless to the other designs, which never read it) and `n` worker processes
 * connected to it as peers that all know each other. A run plan (one cell) is executed on it
 * in three steps — prepare every worker, go, collect — each bounded by the cell's deadline.
 */
import { PeerServer } from '../lib/index.js';
import { LEGACY_STATE_BYTES } from '../lib/devices/index.js';
import { place, type Placement } from './affinity.js';
import { uniqueSocketPath } from './paths.js';
import { BenchError, setupDeadline, withTimeout, type Request, type WorkerPool } from './pool.js';
import type { Collected, Connected, Finished, RoleSpec } from './protocol.js';
import type { AdapterName } from './types.js';

/** 4 MiB: room for 8 lanes of 4096 slots, a 64 KiB channel pair, and the 2010 model's status table at the end. */
export const SESSION_SHM_SIZE = 4 * 1024 * 1024;

export interface RunPlan {
  adapter: AdapterName;
  /** Per worker, where it differs from `adapter` (a guest busy-polling beside host peers that do not). */
  adapters?: AdapterName[];
  /** Role of worker i of the session. */
  roles: RoleSpec[];
  /** Prepare one worker after the other, in this order (when one sets up what the next opens). */
  prepareOrder?: number[];
  /** For error messages: "fan-in 4 / bitmask". */
  label: string;
}

/** A peer a session drives: a forked worker (pool.ts), or the agent in a guest (vm/guest-worker.ts). */
export interface CellWorker {
  readonly index: number;
  readonly pid: number;
  readonly alive: boolean;
  request<T>(command: Request, what?: string): Promise<T>;
}

/** Called between the steps of a run: instruments outside the workers read their counters there. */
export interface RunHooks {
  /** Every worker prepared (counts reset), before `go`. */
  prepared?(): void;
  /** Every worker's part is done (before `collect`). */
  delivered?(): void;
  /** Every worker collected its counts. */
  collected?(): void;
}

export interface PlanOutcome {
  finished: Finished[];
  collected: Collected[];
}

export class Session {
  readonly server: PeerServer;
  readonly workers: CellWorker[];
  readonly ids: number[];
  /** Bytes of the data area that reset() leaves alone (the guest's mailbox), if any. */
  readonly #reserved: { offset: number; length: number } | null;
  /** Whether close() closes the server (not for a session attached to a server it does not own). */
  readonly #ownsServer: boolean;
  /** Where the workers run; `pinError` says why they could not be pinned. */
  placement: Placement = 'scheduler';
  pinError: string | null = null;
  #closed = false;

  private constructor(server: PeerServer, workers: CellWorker[], ids: number[], reserved: { offset: number; length: number } | null, ownsServer: boolean) {
    this.server = server;
    this.workers = workers;
    this.ids = ids;
    this.#reserved = reserved;
    this.#ownsServer = ownsServer;
  }

  /**
   * A session over workers already connected to `server` (which it does not close), keeping
   * `reserved` out of every reset. `bench --vm` runs cells of host workers and a guest this way.
   */
  static attach(server: PeerServer, workers: CellWorker[], ids: number[], reserved: { offset: number; length: number } | null = null): Session {
    return new Session(server, workers, ids, reserved, false);
  }

  /**
   * Starts a server and connects `n` workers of `pool` to it; with `pin`, one CPU per worker
   * when there are enough CPUs (affinity.ts). Closes the server on failure.
   */
  static async open(pool: WorkerPool, n: number, timeoutMs: number, pin = true): Promise<Session> {
    const server = PeerServer.listen({
      socketPath: uniqueSocketPath('srv'),
      bitmask: true,
      vectors: 1,
      size: SESSION_SHM_SIZE,
      maxPeers: 64,
    });
    try {
      const workers = await pool.ensure(n, timeoutMs);
      const setupMs = setupDeadline(timeoutMs);
      const ids: number[] = [];
      // One at a time: IDs then follow worker order (0, 1, 2, ...), which keeps plans readable.
      for (const w of workers) {
        const c = await withTimeout(w.request<Connected>({ type: 'connect', socketPath: server.socketPath }), setupMs, `worker ${w.index} to connect`);
        ids.push(c.id);
      }
      await withTimeout(Promise.all(workers.map((w) => w.request({ type: 'know', ids }))), setupMs, 'the peers to know each other');
      const session = new Session(server, workers, ids, null, true);
      if (pin) {
        try {
          session.placement = await place(workers.map((w) => w.pid));
        } catch (error) {
          session.pinError = (error as Error).message;
        }
      }
      return session;
    } catch (error) {
      server.close();
      throw error;
    }
  }

  get dataOffset(): number {
    return this.server.dataOffset;
  }

  /** The last byte a plan may use (the 2010 model keeps its IntrStatus table in the last 512 bytes). */
  get dataEnd(): number {
    return this.#reserved?.offset ?? this.server.size - LEGACY_STATE_BYTES;
  }

  /**
   * A clean slate between cells: the application area and the 2010 status table zeroed, and
   * every pending bit cleared (nothing runs between cells, so nothing races with this).
   */
  reset(): void {
    const buffer = this.server.shm.buffer;
    const data = new Uint8Array(buffer, this.dataOffset);
    if (this.#reserved === null) data.fill(0);
    else {
      const start = this.#reserved.offset - this.dataOffset;
      data.fill(0, 0, start);
      data.fill(0, start + this.#reserved.length);
    }
    const header = this.server.header!;
    new Uint8Array(buffer, header.pendingOffset, header.words * 8).fill(0);
  }

  /** Runs one plan: prepare, go, collect. Any failure or the deadline rejects (the caller then discards the session). */
  async run(plan: RunPlan, timeoutMs: number, epoch: bigint, hooks: RunHooks = {}): Promise<PlanOutcome> {
    if (this.#closed) throw new BenchError('session closed');
    if (plan.roles.length !== this.workers.length) {
      throw new BenchError(`${plan.label}: ${plan.roles.length} roles for ${this.workers.length} workers`);
    }
    this.reset();
    const deadline = Date.now() + timeoutMs;
    const left = (): number => Math.max(1, deadline - Date.now());
    const prepare = (i: number): Promise<unknown> =>
      this.workers[i]!.request({ type: 'prepare', role: plan.roles[i]!, adapter: plan.adapters?.[i] ?? plan.adapter, epoch: epoch.toString() }, `prepare ${plan.roles[i]!.kind}`);
    if (plan.prepareOrder !== undefined) {
      for (const i of plan.prepareOrder) await withTimeout(prepare(i), left(), `${plan.label}: worker ${i} to prepare`);
    } else {
      await withTimeout(Promise.all(this.workers.map((_, i) => prepare(i))), left(), `${plan.label}: the workers to prepare`);
    }
    hooks.prepared?.();
    const finished = await withTimeout(
      Promise.all(this.workers.map((w, i) => w.request<Finished>({ type: 'go' }, `${plan.roles[i]!.kind}`))),
      left(),
      `${plan.label}: the messages to be delivered (raise --timeout, or lower --messages)`,
    );
    hooks.delivered?.();
    const collected = await withTimeout(
      Promise.all(this.workers.map((w) => w.request<Collected>({ type: 'collect' }))),
      left(),
      `${plan.label}: the workers' counts`,
    );
    hooks.collected?.();
    return { finished, collected };
  }

  /** Disconnects the workers (best effort) and closes the server; an attached session leaves both to their owner. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#ownsServer) return;
    await Promise.allSettled(
      this.workers.filter((w) => w.alive).map((w) => withTimeout(w.request({ type: 'disconnect' }), 2000, 'disconnect')),
    );
    this.server.close();
  }

  /** After a failure: the server closed at once, if this session owns it (the caller kills the workers). */
  abandon(): void {
    this.#closed = true;
    if (this.#ownsServer) this.server.close();
  }
}
