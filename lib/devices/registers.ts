/**
 * What every device model shares: typed register maps (a wrong register name, access or width
 * does not compile) and the intercept accounting (every register access is a trap of that
 * register; every interrupt delivered into the peer is an injection; kernel crossings come
 * from the peer's counters()).
 */
import type { Endpoint } from '../endpoint/endpoint.js';
import type { InterruptCounters } from '../sys/interrupt-table.js';

export type Access = 'r' | 'w' | 'rw';
export interface RegisterDef {
  readonly offset: number;
  readonly width: 16 | 32;
  readonly access: Access;
}
export type RegisterMap = Readonly<Record<string, RegisterDef>>;

/** Registers of map M that can be read with an access of `W` bits. */
export type ReadableOf<M extends RegisterMap, W extends 16 | 32> = {
  [K in keyof M]: M[K] extends { access: 'r' | 'rw'; width: W } ? K : never;
}[keyof M] &
  string;
/** Registers of map M that can be written with an access of `W` bits. */
export type WritableOf<M extends RegisterMap, W extends 16 | 32> = {
  [K in keyof M]: M[K] extends { access: 'w' | 'rw'; width: W } ? K : never;
}[keyof M] &
  string;

export type DesignName = 'legacy2010' | 'qemu' | 'bitmask';

export interface RegisterTraps {
  reads: number;
  writes: number;
}

export interface DeviceStats {
  design: DesignName;
  /** Register accesses (each one an exit to the hypervisor in a VM), total and per register. */
  traps: number;
  trapsByRegister: Record<string, RegisterTraps>;
  /** Interrupts delivered into this peer. */
  injections: number;
  /** traps + injections. */
  intercepts: number;
  /** eventfd writes + eventfd reads + event-loop wakeups, from the peer's counters. */
  kernelCrossings: number;
  eventfdWrites: number;
  eventfdReads: number;
  wakeups: number;
  /** Wakeups that found nothing to deliver (drained already, or masked). */
  spurious: number;
  /** Bitmask design: rings, how many were suppressed, and clears of the own bit. */
  rings: number;
  suppressed: number;
  acks: number;
}

/** Counts traps per register and injections; merges the peer's kernel-crossing counters. */
export class InterceptCounter<M extends RegisterMap> {
  readonly #traps: Record<string, RegisterTraps> = {};
  #injections = 0;
  #base: InterruptCounters | null = null;

  constructor(
    readonly design: DesignName,
    readonly registers: M,
    private readonly peer: Pick<Endpoint, 'counters'>,
  ) {
    this.reset();
  }

  read(name: keyof M & string): void {
    this.#traps[name]!.reads++;
  }

  write(name: keyof M & string): void {
    this.#traps[name]!.writes++;
  }

  /** `n` interrupts delivered (more than one when the endpoint counts the injections a real device made). */
  injection(n = 1): void {
    this.#injections += n;
  }

  reset(): void {
    for (const name of Object.keys(this.registers)) this.#traps[name] = { reads: 0, writes: 0 };
    this.#injections = 0;
    // The counters belong to the peer (shared by everything on it): diff from a baseline.
    this.#base = this.peer.counters();
  }

  stats(): DeviceStats {
    let traps = 0;
    const byRegister: Record<string, RegisterTraps> = {};
    for (const [name, t] of Object.entries(this.#traps)) {
      byRegister[name] = { ...t };
      traps += t.reads + t.writes;
    }
    return {
      design: this.design,
      trapsByRegister: byRegister,
      ...countsSince(this.peer.counters(), this.#base!, traps, this.#injections),
    };
  }
}

/**
 * The design-independent part of the stats: `traps` and `injections` as the caller counted
 * them, everything else the counters' change from `base` to `now`.
 */
export function countsSince(
  now: InterruptCounters,
  base: InterruptCounters,
  traps: number,
  injections: number,
): Omit<DeviceStats, 'design' | 'trapsByRegister'> {
  const d = (k: keyof InterruptCounters): number => now[k] - base[k];
  const eventfdWrites = d('eventfdWrites');
  const eventfdReads = d('eventfdReads');
  const wakeups = d('wakeups');
  return {
    traps,
    injections,
    intercepts: traps + injections,
    kernelCrossings: eventfdWrites + eventfdReads + wakeups,
    eventfdWrites,
    eventfdReads,
    wakeups,
    spurious: d('spurious'),
    rings: d('rings'),
    suppressed: d('suppressed'),
    acks: d('acks'),
  };
}
