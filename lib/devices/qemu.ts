/**
 * Design B: QEMU's ivshmem-doorbell (revision 1), register for register as QEMU 7.2 behaves:
 * 32-bit IntrMask (a latch with no effect), IntrStatus (read returns and clears; never set by
 * a doorbell), IVPosition (read-only ID), Doorbell = dest << 16 | vector (unknown peers and
 * vectors ignored). Interrupts are MSI-X vectors, one eventfd each; QEMU drains an eventfd
 * and injects once, so rings that arrive together coalesce into one injection.
 */
import type { Endpoint } from '../endpoint/endpoint.js';
import { Bar0, doorbellValue } from '../protocol/pci.js';
import { DeviceModel } from './device-model.js';
import type { ReadableOf, RegisterMap, WritableOf } from './registers.js';
import * as check from '../core/validate.js';

export const QEMU_REGISTERS = {
  IntrMask: { offset: Bar0.IntrMask, width: 32, access: 'rw' },
  IntrStatus: { offset: Bar0.IntrStatus, width: 32, access: 'rw' },
  IVPosition: { offset: Bar0.IVPosition, width: 32, access: 'r' },
  Doorbell: { offset: Bar0.Doorbell, width: 32, access: 'w' },
} as const satisfies RegisterMap;
export type QemuRegisters = typeof QEMU_REGISTERS;

export interface QemuDeviceEvents {
  /** MSI-X vector `vector` was injected. */
  interrupt: [vector: number];
}

export class QemuDevice extends DeviceModel<QemuRegisters, QemuDeviceEvents> {
  #mask = 0;
  #status = 0;

  constructor(peer: Endpoint) {
    super('qemu', QEMU_REGISTERS, peer);
  }

  /** QEMU drained the eventfd: one MSI-X injection, however many rings it coalesced (in a VM: the injections the guest took). */
  protected interrupted(vector: number, injections: number): void {
    this.counter.injection(injections);
    this.emit('interrupt', vector);
  }

  /** A 32-bit register read (one trap). */
  readl(register: ReadableOf<QemuRegisters, 32>): number {
    this.live();
    this.counter.read(register);
    switch (register) {
      case 'IntrMask':
        return this.#mask;
      case 'IntrStatus': {
        const value = this.#status;
        this.#status = 0;
        return value;
      }
      case 'IVPosition':
        return this.peer.id;
    }
  }

  /** A 32-bit register write (one trap). */
  writel(register: WritableOf<QemuRegisters, 32>, value: number): void {
    this.live();
    check.integer('value', value, 0, 0xffffffff);
    this.counter.write(register);
    switch (register) {
      case 'IntrMask':
        this.#mask = value;
        return;
      case 'IntrStatus':
        this.#status = value;
        return;
      case 'Doorbell':
        this.#doorbell(value >>> 16, value & 0xffff);
        return;
    }
  }

  /** Convenience: Doorbell = dest << 16 | vector (one trap). */
  ring(dest: number, vector = 0): void {
    check.integer('dest', dest, 0, 0xffff);
    check.integer('vector', vector, 0, 0xffff);
    this.writel('Doorbell', doorbellValue(dest, vector));
  }

  #doorbell(dest: number, vector: number): void {
    const vectors = this.peer.vectorsOf(dest);
    // QEMU matches (dest, vector) exactly through its ioeventfds; anything else reaches the MMIO
    // handler, which takes only the low 8 bits of the vector. Unknown peers/vectors: ignored.
    const v = vector < vectors ? vector : vector & 0xff;
    if (v >= vectors) return;
    this.peer.ring(dest, v);
  }
}
