/**
 * The 32-bit registers of a PCI BAR (BAR0 of the ivshmem device), done natively: one volatile
 * 4-byte load or store per call, never a typed-array access the JIT may merge, split or move.
 * A VfioDevice has them (BAR0 through VFIO); PciRegisters owns them for a device no driver holds
 * (its sysfs resource file, mapped). An InterruptTable in doorbell mode rings through them.
 */
import { native, type NativeRegisters } from './binding.js';
import { ClosedError } from '../core/errors.js';
import * as check from '../core/validate.js';

/** BAR0 as 32-bit registers. */
export interface DeviceRegisters {
  /** Bytes. */
  readonly size: number;
  /** One volatile 32-bit load at `offset` (a multiple of 4 inside the registers). */
  read32(offset: number): number;
  /** One volatile 32-bit store of `value` (an unsigned 32-bit integer) at `offset`. */
  write32(offset: number, value: number): void;
}

// The native object behind each DeviceRegisters, for an InterruptTable to ring through; no
// one else sees it.
const handles = new WeakMap<DeviceRegisters, object>();

/** @internal The native object of `registers` (a native VfioDevice or Registers). */
export function registersHandle(registers: DeviceRegisters): object {
  const handle = handles.get(registers);
  if (handle === undefined) throw new TypeError('registers must be a VfioDevice\'s or a PciRegisters');
  return handle;
}

/**
 * @internal The DeviceRegisters of a native object with read32/write32 (bounds and value
 * checked here, ClosedError once `closed()`), registered for registersHandle().
 */
export function deviceRegisters(
  handle: { read32(offset: number): number; write32(offset: number, value: number): void },
  size: number,
  owner: string,
  closed: () => boolean,
): DeviceRegisters {
  const offsetIn = (offset: number): number => {
    if (closed()) throw new ClosedError(owner);
    check.integer('offset', offset, 0, size - 4);
    if (offset % 4 !== 0) throw new RangeError(`offset must be a multiple of 4, got ${offset}`);
    return offset;
  };
  const registers: DeviceRegisters = Object.freeze({
    size,
    read32: (offset: number): number => handle.read32(offsetIn(offset)),
    write32: (offset: number, value: number): void => handle.write32(offsetIn(offset), check.integer('value', value, 0, 0xffffffff)),
  });
  handles.set(registers, handle);
  return registers;
}

/**
 * The registers of a PCI device through its sysfs resource file
 * (`/sys/bus/pci/devices/ADDR/resource0`), which the kernel lets be mapped only while no
 * driver holds the device. `offsetInPage` is where the BAR starts in its first page.
 */
export class PciRegisters implements DeviceRegisters, Disposable {
  readonly #native: NativeRegisters;
  readonly #registers: DeviceRegisters;
  readonly path: string;
  readonly size: number;

  constructor(path: string, size: number, offsetInPage = 0) {
    check.string('path', path);
    this.size = check.integer('size', size, 4, 2 ** 31);
    check.integer('offsetInPage', offsetInPage, 0, 4095);
    this.path = path;
    this.#native = new native.Registers(path, offsetInPage, size);
    this.#registers = deviceRegisters(this.#native, size, 'PciRegisters', () => this.#native.closed);
    handles.set(this, this.#native);
  }

  read32(offset: number): number {
    return this.#registers.read32(offset);
  }

  write32(offset: number, value: number): void {
    this.#registers.write32(offset, value);
  }

  get closed(): boolean {
    return this.#native.closed;
  }

  /** Unmaps the registers (an interrupt table ringing through them gets EBADF after). Idempotent. */
  close(): void {
    this.#native.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
