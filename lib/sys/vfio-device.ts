/**
 * A PCI device owned through Linux VFIO: how a program inside a VM drives QEMU's
 * ivshmem-doorbell device (1af4:1110) with interrupts, once the device is bound to vfio-pci.
 *
 * - `registers`: BAR0, 32-bit MMIO done natively (one 4-byte access each; never a typed array).
 * - `memory`: BAR2, the shared memory, as a MemoryView (what the layouts above work over).
 * - `enableInterrupts(n)`: one EventFd per MSI-X vector, signalled by the device. Sets the bus
 *   master bit in PCI_COMMAND first: without it QEMU drops the device's MSI-X writes.
 *
 * The device fd is close-on-exec: a child that is to take the interrupts must open the device
 * itself. Only this process's own eventfds are wired to the vectors.
 */
import { constants as bufferConstants } from 'node:buffer';
import { existsSync, readlinkSync } from 'node:fs';
import { basename } from 'node:path';
import { native, type NativeVfioDevice, type NativeVfioRegion } from './binding.js';
import { EventFd } from './eventfd.js';
import { LeaseKeeper } from './lease.js';
import { deviceRegisters, type DeviceRegisters } from './registers.js';
import { MappedView, type MemoryView } from './shared-memory.js';
import { ClosedError, DeviceError } from '../core/errors.js';
import * as check from '../core/validate.js';

const MAX_BUFFER_LENGTH = bufferConstants.MAX_LENGTH;
const PCI_DEVICES = '/sys/bus/pci/devices';

/** PCI_COMMAND in config space, and its bus master bit. */
const PCI_COMMAND = 0x4;
const PCI_COMMAND_MASTER = 0x4;

/** One region of the device as VFIO describes it. */
export interface VfioRegionInfo {
  readonly size: number;
  /** Offset of the region in the device fd. */
  readonly offset: number;
  /** Whether VFIO lets the region be mapped (VFIO_REGION_INFO_FLAG_MMAP). */
  readonly mappable: boolean;
}

function region(r: NativeVfioRegion): VfioRegionInfo {
  return Object.freeze({ size: r.size, offset: r.offset, mappable: r.mappable });
}

export class VfioDevice implements Disposable {
  readonly #native: NativeVfioDevice;
  /** The PCI address, normalized ('0000:00:02.0'). */
  readonly address: string;
  /** The IOMMU group's device node ('/dev/vfio/3'). */
  readonly groupPath: string;
  readonly bar0: VfioRegionInfo;
  readonly bar2: VfioRegionInfo;
  readonly config: VfioRegionInfo;
  /** MSI-X vectors the device has. */
  readonly msixVectors: number;
  readonly registers: DeviceRegisters;
  /** BAR2, the shared memory. */
  readonly memory: MemoryView;
  #interrupts: EventFd[] = [];
  #closed = false;

  private constructor(n: NativeVfioDevice) {
    this.#native = n;
    const info = n.info;
    this.address = info.address;
    this.groupPath = info.group;
    this.bar0 = region(info.bar0);
    this.bar2 = region(info.bar2);
    this.config = region(info.config);
    this.msixVectors = info.msixVectors;
    this.registers = deviceRegisters(n, info.bar0.size, 'VfioDevice', () => this.#closed);
    this.memory = new MappedView(n.info.bar2.size, n, 'BAR2', 'VfioDevice', () => this.closed);
  }

  /**
   * Opens the device at a PCI address ('0000:00:02.0' or '00:02.0'), which must be bound to
   * vfio-pci: its IOMMU group from sysfs, the VFIO container and group, the device fd, BAR0 and
   * BAR2 mapped. A DeviceError for an address that is not a device ('bad-address'), a device
   * without IOMMU group ('no-iommu-group'), a group not viable ('not-viable'); system errors
   * (code, errno, syscall, path) for the rest.
   */
  static open(address: string): VfioDevice {
    check.string('address', address);
    const full = check.pciAddress(address);
    const dir = `${PCI_DEVICES}/${full}`;
    if (!existsSync(dir)) throw new DeviceError('bad-address', address, `no PCI device ${full} (${dir} does not exist)`);
    let group: string;
    try {
      group = basename(readlinkSync(`${dir}/iommu_group`));
    } catch (cause) {
      throw new DeviceError('no-iommu-group', address, `PCI device ${full} has no IOMMU group (${dir}/iommu_group): no IOMMU, or it is off (intel_iommu=on)`, { cause });
    }
    const groupPath = `/dev/vfio/${group}`;
    try {
      return new VfioDevice(new native.VfioDevice(groupPath, full, MAX_BUFFER_LENGTH));
    } catch (cause) {
      if ((cause as { reason?: unknown } | null)?.reason === 'not-viable') {
        throw new DeviceError('not-viable', address, `the IOMMU group ${groupPath} of ${full} is not viable: bind every device of the group to vfio-pci (or unbind it)`, { cause });
      }
      throw cause;
    }
  }

  /** A read of PCI config space through VFIO (width 1, 2 or 4 bytes, aligned). */
  configRead(offset: number, width: 1 | 2 | 4): number {
    return this.#live().configRead(check.integer('offset', offset, 0, this.config.size - 1), width);
  }

  configWrite(offset: number, width: 1 | 2 | 4, value: number): void {
    this.#live().configWrite(check.integer('offset', offset, 0, this.config.size - 1), width, check.integer('value', value, 0, 0xffffffff));
  }

  /** A lease on the u32 at byte `offset` of BAR2, renewed by a native thread (see LeaseKeeper). */
  keepLease(offset: number, intervalMs: number): LeaseKeeper {
    return new LeaseKeeper(this.#live().fd, this.bar2.offset, check.integer('offset', offset, 0, this.bar2.size - 4), intervalMs);
  }

  /** Sets the bus master bit of PCI_COMMAND (without it the device's MSI-X writes are dropped). */
  enableBusMaster(): void {
    const command = this.configRead(PCI_COMMAND, 2);
    if ((command & PCI_COMMAND_MASTER) === 0) this.configWrite(PCI_COMMAND, 2, command | PCI_COMMAND_MASTER);
  }

  /**
   * Wires MSI-X vectors 0..vectors-1 (default: all of the device's) to new EventFds and returns
   * them, vector i at index i; bus mastering is enabled first. The EventFds are the device's:
   * disableInterrupts() and close() close them. Calling again replaces the previous set.
   */
  enableInterrupts(vectors: number = this.msixVectors): EventFd[] {
    const n = this.#live();
    check.integer('vectors', vectors, 1, this.msixVectors);
    this.enableBusMaster();
    this.disableInterrupts();
    const fds: EventFd[] = [];
    try {
      for (let i = 0; i < vectors; i++) fds.push(new EventFd());
      n.setIrqs(fds.map((e) => e.fd));
    } catch (error) {
      for (const e of fds) e.close();
      throw error;
    }
    this.#interrupts = fds;
    return [...fds];
  }

  /** MSI-X off, and the EventFds of enableInterrupts() closed. Nothing if they were not on. */
  disableInterrupts(): void {
    if (this.#closed) return;
    this.#native.disableIrqs();
    for (const e of this.#interrupts.splice(0)) e.close();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Interrupts off, BAR2 buffers detached, BARs unmapped, device, group and container closed. Idempotent. */
  close(): void {
    if (this.#closed) return;
    try {
      this.#native.disableIrqs();
    } finally {
      this.#closed = true;
      for (const e of this.#interrupts.splice(0)) e.close();
      this.#native.close();
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #live(): NativeVfioDevice {
    if (this.#closed) throw new ClosedError('VfioDevice');
    return this.#native;
  }
}
