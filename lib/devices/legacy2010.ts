/**
 * Design A: the 2010 draft of the inter-VM shared memory device ("Nahanni"), modelled over the
 * real transport. 16-bit registers; the Doorbell carries an 8-bit destination and an 8-bit
 * value that becomes the destination's IntrStatus; destination 255 broadcasts; the interrupt
 * is level-triggered (asserted while IntrStatus & IntrMask != 0) and the handler's read of
 * IntrStatus clears it. Masked interrupts are held and delivered on unmask.
 *
 * The IntrStatus of every peer lives in a small table in the shared memory (it is the state a
 * sender's device would write into the receiver's device); by default the last 512 bytes.
 */
import type { Endpoint } from '../endpoint/endpoint.js';
import { DeviceModel } from './device-model.js';
import type { ReadableOf, RegisterMap, WritableOf } from './registers.js';
import * as check from '../core/validate.js';
import { lowBuffer } from '../sys/shared-memory.js';

export const LEGACY2010_REGISTERS = {
  IntrMask: { offset: 0, width: 16, access: 'rw' },
  IntrStatus: { offset: 2, width: 16, access: 'r' },
  Doorbell: { offset: 4, width: 16, access: 'w' },
  IVPosition: { offset: 6, width: 16, access: 'r' },
  IVLiveList: { offset: 8, width: 16, access: 'r' },
} as const satisfies RegisterMap;
export type Legacy2010Registers = typeof LEGACY2010_REGISTERS;

export const LEGACY_BROADCAST = 255;
/** Bytes of the IntrStatus table (one u16 per addressable ID, 0..254). */
export const LEGACY_STATE_BYTES = 512;

export interface Legacy2010Options {
  /** Byte offset of the IntrStatus table; every peer must use the same. Default: size - 512. */
  stateOffset?: number;
}

export interface Legacy2010Events {
  /** The interrupt was injected: the handler should read IntrStatus (which clears it). */
  interrupt: [];
}

export class Legacy2010Device extends DeviceModel<Legacy2010Registers, Legacy2010Events> {
  readonly #status: Uint16Array;
  #mask = 0xffff;
  // The level interrupt line as the interrupt controller sees it: injected once per rise.
  #asserted = false;

  constructor(peer: Endpoint, options: Legacy2010Options = {}) {
    // Checked before super() subscribes to the peer, so a refusal leaves nothing behind.
    if (peer.id >= LEGACY_BROADCAST) {
      throw new RangeError(`peer ID ${peer.id} cannot be addressed by the 2010 layout (8-bit IDs, 255 = broadcast)`);
    }
    const size = peer.shm.size;
    const offset = check.integer('stateOffset', options.stateOffset ?? size - LEGACY_STATE_BYTES, 0, size - LEGACY_STATE_BYTES);
    if (offset % 2 !== 0) throw new RangeError('stateOffset must be even');
    super('legacy2010', LEGACY2010_REGISTERS, peer);
    this.#status = new Uint16Array(lowBuffer(peer.shm), offset, LEGACY_STATE_BYTES / 2);
  }

  protected interrupted(vector: number): void {
    if (vector === 0) this.#update();
  }

  /** A 16-bit register read (one trap). IntrStatus reads return the value and clear it. */
  readw(register: ReadableOf<Legacy2010Registers, 16>): number {
    this.live();
    this.counter.read(register);
    switch (register) {
      case 'IntrMask':
        return this.#mask;
      case 'IntrStatus': {
        const value = Atomics.exchange(this.#status, this.peer.id, 0);
        this.#asserted = false; // deasserts the level interrupt
        return value;
      }
      case 'IVPosition':
        return this.peer.id;
      case 'IVLiveList': {
        // 16 bits: live IDs 0..15 (the register is as wide as the draft made it).
        let bits = 1 << this.peer.id;
        for (const { id } of this.peer.peers()) if (id < 16) bits |= 1 << id;
        return bits & 0xffff;
      }
    }
  }

  /** A 16-bit register write (one trap). */
  writew(register: WritableOf<Legacy2010Registers, 16>, value: number): void {
    this.live();
    check.integer('value', value, 0, 0xffff);
    this.counter.write(register);
    switch (register) {
      case 'IntrMask':
        this.#mask = value;
        // A held interrupt is delivered on unmask.
        queueMicrotask(() => this.#update());
        return;
      case 'Doorbell':
        this.#doorbell(value >> 8, value & 0xff);
        return;
    }
  }

  /** Convenience: write the Doorbell with destination and value (one trap). */
  ring(dest: number, value: number): void {
    check.integer('dest', dest, 0, LEGACY_BROADCAST);
    check.integer('value', value, 0, 0xff);
    this.writew('Doorbell', (dest << 8) | value);
  }

  #doorbell(dest: number, value: number): void {
    const targets = dest === LEGACY_BROADCAST ? this.peer.peers().map((p) => p.id).filter((id) => id < LEGACY_BROADCAST) : [dest];
    for (const id of targets) {
      if (id === this.peer.id && dest === LEGACY_BROADCAST) continue;
      // The value first, then the signal: the receiver reads it when woken.
      Atomics.store(this.#status, id, value);
      // An unknown destination is ignored, as a device would.
      if (this.peer.vectorsOf(id) > 0) this.peer.ring(id, 0);
      else Atomics.store(this.#status, id, 0);
    }
  }

  #update(): void {
    if (this.closed || this.peer.closed || this.#asserted) return;
    if ((Atomics.load(this.#status, this.peer.id) & this.#mask) === 0) return; // masked: held
    this.#asserted = true;
    this.counter.injection();
    this.emit('interrupt');
  }
}
