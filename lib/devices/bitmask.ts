/**
 * Design C: the level-triggered bitmask proposed in review (status and mask combined into one
 * pending bit per peer in shared memory). A sender reads the receiver's bit without a trap and
 * touches the Doorbell register only on the 0->1 edge; the receiver clears its bit when done
 * and re-checks. Two accountings of the clear: a plain shared-memory write (free), or a
 * write-1-to-clear register (one trap of PendingClear), as the seed's hardware variant.
 */
import { BitmaskDoorbell, type ReceiveOptions } from '../doorbell/bitmask-doorbell.js';
import type { Endpoint } from '../endpoint/endpoint.js';
import { DeviceModel } from './device-model.js';
import type { ReadableOf, RegisterMap, WritableOf } from './registers.js';
import * as check from '../core/validate.js';

export const BITMASK_REGISTERS = {
  IVPosition: { offset: 0x08, width: 32, access: 'r' },
  Doorbell: { offset: 0x0c, width: 32, access: 'w' },
  PendingClear: { offset: 0x10, width: 32, access: 'w' },
} as const satisfies RegisterMap;
export type BitmaskRegisters = typeof BITMASK_REGISTERS;

export interface BitmaskDeviceOptions {
  /** 'shm': the receiver clears its bit in shared memory (no trap, default); 'register': W1C register (one trap). */
  clear?: 'shm' | 'register';
}

export class BitmaskDevice extends DeviceModel<BitmaskRegisters, Record<never, never>> {
  readonly #doorbell: BitmaskDoorbell;

  /** Over a peer connected with `bitmask: true`. */
  constructor(peer: Endpoint, options: BitmaskDeviceOptions = {}) {
    const clear = options.clear ?? 'shm';
    if (clear !== 'shm' && clear !== 'register') throw new RangeError(`clear must be 'shm' or 'register', got ${String(clear)}`);
    super('bitmask', BITMASK_REGISTERS, peer);
    const registerClear = clear === 'register';
    this.#doorbell = new BitmaskDoorbell(peer, {
      onClear: () => {
        if (registerClear) this.counter.write('PendingClear');
      },
    });
  }

  /** A rising edge woke this peer: one injection (in a VM: the injections the guest took). */
  protected interrupted(vector: number, injections: number): void {
    if (vector === 0) this.counter.injection(injections);
  }

  get doorbell(): BitmaskDoorbell {
    return this.#doorbell;
  }

  /** Rings `dest` after the caller published its work. A trap only on the 0->1 edge. */
  ring(dest: number): boolean {
    this.live();
    const edge = this.#doorbell.ring(dest);
    if (edge) this.counter.write('Doorbell');
    return edge;
  }

  /** Rings every other live peer; a trap per peer signalled (each is one Doorbell write). */
  broadcast(): number {
    this.live();
    const signalled = this.#doorbell.broadcast();
    for (let i = 0; i < signalled; i++) this.counter.write('Doorbell');
    return signalled;
  }

  readl(register: ReadableOf<BitmaskRegisters, 32>): number {
    this.live();
    this.counter.read(register);
    return this.peer.id;
  }

  /** Doorbell = dest (rings only on the edge: the suppressed case makes no access at all); PendingClear = W1C of the own bit. */
  writel(register: WritableOf<BitmaskRegisters, 32>, value: number): void {
    this.live();
    check.integer('value', value, 0, 0xffffffff);
    if (register === 'Doorbell') {
      this.ring(value);
      return;
    }
    this.counter.write('PendingClear');
    if (value & 1) this.peer.pendingBits.ack();
  }

  /**
   * The receive loop of the design: yields while `hasWork()`, clears the bit (counted per
   * the chosen accounting) and re-checks between bursts.
   */
  notifications(hasWork: () => boolean, options: ReceiveOptions = {}): AsyncGenerator<void, void, undefined> {
    return this.#doorbell.notifications(hasWork, options);
  }

  async serve(hasWork: () => boolean, handle: () => void | Promise<void>, options: ReceiveOptions = {}): Promise<void> {
    for await (const _ of this.notifications(hasWork, options)) await handle();
  }

  protected override closing(): void {
    this.#doorbell.close();
  }
}
