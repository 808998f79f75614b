/**
 * Per-design adapters over the device models (lib/devices/). The workload driver
 * (workloads.ts) is design-neutral: it publishes work in shared memory, then calls `ring`
 * or `broadcast`, and receives through `serve(hasWork, handle)`. Each adapter turns those
 * into exactly the register accesses its design prescribes, so every trap and injection is
 * counted by the device model itself — the figures are counts, never formulas.
 *
 * - legacy2010: Doorbell write `dest << 8 | 1` (destination 255 broadcasts, one write);
 *   the interrupt handler reads IntrStatus (read-to-clear), then processes all work.
 * - legacy2010-mask: the same, with IntrMask = 0 before and IntrMask = 0xffff after processing.
 * - qemu: Doorbell write `dest << 16 | 0` per destination (a broadcast is one per peer); the
 *   MSI-X handler processes all work, no register access.
 * - bitmask / bitmask-w1c: BitmaskDevice.ring (a trap only on the 0->1 edge), broadcast, and
 *   its receive loop (drain, process, clear, re-check); the clear is free in shared memory or
 *   one PendingClear trap (`clear: 'register'`).
 * - bitmask-busypoll: bitmask, the receiver polling its work for VM_BUSY_POLL_MICROS before it
 *   sleeps (the busy-poll receive of `bench --vm`).
 * - ivshmem: the library's BitmaskDoorbell with no device model at all (the ivshmem-pingpong
 *   baseline); its traps and injections are the native counters' signals and interrupts.
 */
import { BitmaskDoorbell, type Endpoint, type InterruptCounters } from '../lib/index.js';
import { BitmaskDevice, Legacy2010Device, LEGACY_BROADCAST, QemuDevice, type DeviceStats } from '../lib/devices/index.js';
import { countsSince } from '../lib/devices/registers.js';
import type { AdapterName, Totals } from './types.js';

export interface AdapterStats {
  totals: Totals;
  trapsByRegister: Record<string, { reads: number; writes: number }>;
}

export interface DesignAdapter {
  readonly name: AdapterName;
  /** Rings `dest`; the caller has published the work. */
  ring(dest: number): void;
  /** Rings every peer in `targets` (all the other peers of the network). */
  broadcast(targets: readonly number[]): void;
  /**
   * Calls `handle()` whenever `hasWork()` is true (handle processes what is there), sleeping
   * on the design's interrupt otherwise. Resolves when `signal` aborts; rejects if `handle` throws.
   */
  serve(hasWork: () => boolean, handle: () => void, signal: AbortSignal): Promise<void>;
  stats(): AdapterStats;
  resetStats(): void;
  close(): void;
}

export function createAdapter(name: AdapterName, peer: Endpoint): DesignAdapter {
  switch (name) {
    case 'legacy2010':
      return new LegacyAdapter(peer, false);
    case 'legacy2010-mask':
      return new LegacyAdapter(peer, true);
    case 'qemu':
      return new QemuAdapter(peer);
    case 'bitmask':
      return new BitmaskAdapter(peer, 'shm');
    case 'bitmask-w1c':
      return new BitmaskAdapter(peer, 'register');
    case 'bitmask-busypoll':
      return new BitmaskAdapter(peer, 'shm', VM_BUSY_POLL_MICROS);
    case 'ivshmem':
      return new IvshmemAdapter(peer, 0);
    case 'ivshmem-busypoll':
      return new IvshmemAdapter(peer, BUSY_POLL_MICROS);
  }
}

function totalsOf(stats: DeviceStats): AdapterStats {
  const { design: _design, trapsByRegister, ...totals } = stats;
  return { totals, trapsByRegister };
}

/** What every adapter over a device model does the same way: counts and closing go to the device. */
abstract class DeviceAdapter<D extends { stats(): DeviceStats; resetStats(): void; close(): void }> {
  constructor(protected readonly dev: D) {}

  stats(): AdapterStats {
    return totalsOf(this.dev.stats());
  }

  resetStats(): void {
    this.dev.resetStats();
  }

  close(): void {
    this.dev.close();
  }
}

/**
 * An interrupt-handler receive loop (legacy2010, qemu): the handler processes all the work
 * there is; the next interrupt comes from the next ring that finds the receiver idle.
 */
function handlerLoop(
  emitter: { on(event: 'interrupt', fn: () => void): unknown; off(event: 'interrupt', fn: () => void): unknown },
  onInterrupt: (processAll: () => void) => void,
  hasWork: () => boolean,
  handle: () => void,
  signal: AbortSignal,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const processAll = (): void => {
      while (hasWork()) handle();
    };
    const listener = (): void => {
      try {
        onInterrupt(processAll);
      } catch (error) {
        finish(error);
      }
    };
    const finish = (error?: unknown): void => {
      emitter.off('interrupt', listener);
      signal.removeEventListener('abort', onAbort);
      if (error === undefined) resolve();
      else reject(error);
    };
    const onAbort = (): void => finish();
    if (signal.aborted) {
      resolve();
      return;
    }
    emitter.on('interrupt', listener);
    signal.addEventListener('abort', onAbort);
  });
}

class LegacyAdapter extends DeviceAdapter<Legacy2010Device> implements DesignAdapter {
  readonly name: AdapterName;
  readonly #mask: boolean;

  constructor(peer: Endpoint, mask: boolean) {
    super(new Legacy2010Device(peer));
    this.name = mask ? 'legacy2010-mask' : 'legacy2010';
    this.#mask = mask;
  }

  ring(dest: number): void {
    this.dev.ring(dest, 1);
  }

  broadcast(): void {
    // One Doorbell write reaches every other live peer.
    this.dev.ring(LEGACY_BROADCAST, 1);
  }

  serve(hasWork: () => boolean, handle: () => void, signal: AbortSignal): Promise<void> {
    const dev = this.dev;
    const mask = this.#mask;
    return handlerLoop(
      dev,
      (processAll) => {
        if (mask) dev.writew('IntrMask', 0);
        dev.readw('IntrStatus'); // read-to-clear: deasserts the level interrupt
        processAll();
        if (mask) dev.writew('IntrMask', 0xffff);
      },
      hasWork,
      handle,
      signal,
    );
  }

}

class QemuAdapter extends DeviceAdapter<QemuDevice> implements DesignAdapter {
  readonly name = 'qemu' as const;

  constructor(peer: Endpoint) {
    super(new QemuDevice(peer));
  }

  ring(dest: number): void {
    this.dev.ring(dest, 0);
  }

  broadcast(targets: readonly number[]): void {
    // No broadcast in the device: one Doorbell write per peer.
    for (const t of targets) this.dev.ring(t, 0);
  }

  serve(hasWork: () => boolean, handle: () => void, signal: AbortSignal): Promise<void> {
    return handlerLoop(this.dev, (processAll) => processAll(), hasWork, handle, signal);
  }

}

class BitmaskAdapter extends DeviceAdapter<BitmaskDevice> implements DesignAdapter {
  readonly name: AdapterName;
  readonly #busyPollMicros: number;

  /** `busyPollMicros` > 0: the receiver polls its work that long before it sleeps (bitmask-busypoll). */
  constructor(peer: Endpoint, clear: 'shm' | 'register', busyPollMicros = 0) {
    super(new BitmaskDevice(peer, { clear }));
    this.name = busyPollMicros > 0 ? 'bitmask-busypoll' : clear === 'shm' ? 'bitmask' : 'bitmask-w1c';
    this.#busyPollMicros = busyPollMicros;
  }

  ring(dest: number): void {
    this.dev.ring(dest);
  }

  broadcast(): void {
    this.dev.broadcast();
  }

  serve(hasWork: () => boolean, handle: () => void, signal: AbortSignal): Promise<void> {
    return this.dev.serve(hasWork, handle, { signal, busyPollMicros: this.#busyPollMicros });
  }

}

/** How long the busy-polling receiver of `ivshmem-pingpong-busypoll` polls before it sleeps. */
export const BUSY_POLL_MICROS = 50;

/**
 * How long `bitmask-busypoll` (the VM part) polls: 1 ms, because under TCG the guest runs
 * many times slower than the host, and a message takes tens of µs to produce there.
 */
export const VM_BUSY_POLL_MICROS = 1000;

class IvshmemAdapter implements DesignAdapter {
  readonly name: 'ivshmem' | 'ivshmem-busypoll';
  readonly #peer: Endpoint;
  readonly #doorbell: BitmaskDoorbell;
  readonly #busyPollMicros: number;
  #base: InterruptCounters;

  constructor(peer: Endpoint, busyPollMicros: number) {
    this.name = busyPollMicros > 0 ? 'ivshmem-busypoll' : 'ivshmem';
    this.#peer = peer;
    this.#busyPollMicros = busyPollMicros;
    this.#doorbell = new BitmaskDoorbell(peer);
    this.#base = peer.counters();
  }

  ring(dest: number): void {
    this.#doorbell.ring(dest);
  }

  broadcast(): void {
    this.#doorbell.broadcast();
  }

  serve(hasWork: () => boolean, handle: () => void, signal: AbortSignal): Promise<void> {
    return this.#doorbell.serve(hasWork, handle, { signal, busyPollMicros: this.#busyPollMicros });
  }

  stats(): AdapterStats {
    return { totals: nativeTotals(this.#peer.counters(), this.#base), trapsByRegister: {} };
  }

  resetStats(): void {
    this.#base = this.#peer.counters();
  }

  close(): void {
    this.#doorbell.close();
  }
}

/**
 * Totals from the native counters alone (no device model): each signal is one Doorbell write
 * (a trap in a VM), each interrupt delivered one injection; the own bit's clear is a
 * shared-memory write (free).
 */
export function nativeTotals(now: InterruptCounters, base: InterruptCounters): Totals {
  return countsSince(now, base, now.signals - base.signals, now.interrupts - base.interrupts);
}
