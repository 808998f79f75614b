/**
 * What a bench peer does with the commands of protocol.ts, whatever carries them: a forked
 * worker on the host (worker.ts, over IPC) or Node inside a guest (vm/guest-agent.ts, over a
 * mailbox in the shared memory). It connects an endpoint, plays the role it is given through
 * the design adapter it is given, and reports times, latencies and its device's stats().
 */
import { Peer, type Endpoint } from '../lib/index.js';
import { waitForPeer } from '../lib/endpoint/wait-for-peer.js';
import { isBaselineRole, startBaselineRole, type BaselineRole } from './baseline-roles.js';
import { clockFrom, settle, type Clock } from './clock.js';
import { createAdapter, type DesignAdapter } from './designs.js';
import type { Collected, Command, Connected, Finished } from './protocol.js';
import { isDesignRole, startRole, type RunningRole } from './workloads.js';

/** Counts taken by instruments outside the package (the guest kernel's), around each cell. */
export interface Instruments {
  /** The cell's counts were just reset: take the starting readings. */
  arm(): void;
  /** The readings since arm(). */
  read(): Record<string, number>;
}

export interface AgentOptions {
  /** Connects this peer's endpoint (the host: a Peer on `socketPath`; a guest: its device). */
  connect(socketPath: string): Promise<Endpoint>;
  instruments?: Instruments;
  /** How long `collect` lets rings still in flight arrive before it counts (default 10 ms). */
  settleMs?: number;
}

export class Agent {
  readonly #options: AgentOptions;
  #endpoint: Endpoint | null = null;
  #adapter: DesignAdapter | null = null;
  #role: RunningRole | null = null;
  #baseline: BaselineRole | null = null;
  #clock: Clock | null = null;

  constructor(options: AgentOptions) {
    this.#options = options;
  }

  get endpoint(): Endpoint | null {
    return this.#endpoint;
  }

  #closeCell(): void {
    this.#adapter?.close();
    this.#adapter = null;
    this.#role = null;
    this.#baseline = null;
  }

  #live(): Endpoint {
    if (this.#endpoint === null) throw new Error('not connected');
    return this.#endpoint;
  }

  async handle(command: Exclude<Command, { type: 'exit' }>): Promise<unknown> {
    switch (command.type) {
      case 'connect': {
        this.#closeCell();
        this.#endpoint?.close();
        this.#endpoint = null;
        this.#endpoint = await this.#options.connect(command.socketPath);
        return { id: this.#endpoint.id, pid: process.pid } satisfies Connected;
      }
      case 'know': {
        const p = this.#live();
        await Promise.all(command.ids.filter((id) => id !== p.id).map((id) => waitForPeer(p, id, 10_000, 'bench peer')));
        return null;
      }
      case 'prepare': {
        this.#closeCell();
        this.#clock = clockFrom(BigInt(command.epoch));
        // Whatever a previous cell left in flight is delivered now, before this cell counts.
        await settle(1);
        const spec = command.role;
        if (isBaselineRole(spec)) {
          const peer = this.#endpoint instanceof Peer ? this.#endpoint : null;
          this.#baseline = await startBaselineRole(spec, this.#clock, peer);
          await settle(1);
          this.#baseline.arm();
          return null;
        }
        if (!isDesignRole(spec)) throw new Error(`unknown role ${(spec as { kind: string }).kind}`);
        const p = this.#live();
        this.#adapter = createAdapter(command.adapter, p);
        this.#role = startRole({ peer: p, adapter: this.#adapter, clock: this.#clock }, spec);
        // The receive loop's first pass (bitmask: a clear of the own bit) is set-up, not work.
        await settle(1);
        this.#adapter.resetStats();
        this.#options.instruments?.arm();
        return null;
      }
      case 'go': {
        if (this.#baseline !== null) return (await this.#baseline.go()) satisfies Finished;
        if (this.#role === null) throw new Error('go before prepare');
        return (await this.#role.go()) satisfies Finished;
      }
      case 'collect': {
        // Rings still in flight (an eventfd written after the last message was taken) are
        // delivered and counted: they happened.
        await settle(this.#options.settleMs ?? 10);
        if (this.#baseline !== null) {
          const collected = await this.#baseline.stop();
          this.#closeCell();
          return collected;
        }
        if (this.#role === null || this.#adapter === null) throw new Error('collect before prepare');
        await this.#role.stop();
        const { totals, trapsByRegister } = this.#adapter.stats();
        const measured = this.#options.instruments?.read();
        this.#closeCell();
        return { totals, trapsByRegister, ...(measured !== undefined ? { measured } : {}) } satisfies Collected;
      }
      case 'disconnect': {
        this.close();
        return null;
      }
    }
  }

  /** Ends the cell and closes the endpoint. Idempotent. */
  close(): void {
    this.#closeCell();
    this.#endpoint?.close();
    this.#endpoint = null;
  }
}
