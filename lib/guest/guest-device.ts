/**
 * GuestDevice: the endpoint inside a VM. QEMU's ivshmem-doorbell PCI device, driven from guest
 * userspace: BAR2 is the shared memory, the Doorbell register rings a peer, MSI-X vectors
 * (through VFIO) are the own interrupts. It implements Endpoint, so BitmaskDoorbell and channels
 * run over it unchanged: a bitmask ring sets the bit in BAR2 and writes the Doorbell register
 * only on the 0->1 edge.
 *
 * QEMU's device has no live list: with the bitmask header the guest learns who is live from its
 * live bits (looked at every `pollInterval` ms and on every peers() call); without it, peers are
 * the ones the application names (`peers` option, addPeer/removePeer). With the header a native
 * thread also renews its lease word (every 100 ms, whatever the event loop is doing) and close()
 * clears it: QEMU stays connected when this program dies, so the lease is how the server (and
 * every peer) learns that it is gone.
 */
import { EventEmitter } from 'node:events';
import { openSync } from 'node:fs';
import { join } from 'node:path';
import { ClosedError, DeviceError, HeaderError } from '../core/errors.js';
import type { Endpoint, EndpointEvents, PeerVectors, PendingBits } from '../endpoint/endpoint.js';
import { waitForPeer } from '../endpoint/wait-for-peer.js';
import { BitWords, readHeader, type HeaderLayout } from '../protocol/header.js';
import { Bar0, type Bar0Register } from '../protocol/pci.js';
import { dupFd } from '../sys/fd.js';
import { LeaseKeeper } from '../sys/lease.js';
import { InterruptTable, type InterruptCounters } from '../sys/interrupt-table.js';
import { PciRegisters, type DeviceRegisters } from '../sys/registers.js';
import { lowBuffer, SharedMemory, type MemoryView } from '../sys/shared-memory.js';
import { VfioDevice } from '../sys/vfio-device.js';
import * as check from '../core/validate.js';
import { bindVfio, describeDevice, listDevices, onlyDevice, sysfsPath, vfioPciLoaded, type GuestDeviceInfo } from './discovery.js';

export interface GuestDeviceOptions {
  /** PCI address ('0000:00:02.0' or '00:02.0'); default: the system's only ivshmem device. */
  address?: string;
  /**
   * 'vfio' (default): the device bound to vfio-pci, MSI-X vectors as 'interrupt' events.
   * 'none': through sysfs, for a device no driver holds: memory and rings, no interrupts.
   */
  interrupts?: 'vfio' | 'none';
  /** With 'vfio': bind a device no driver holds to vfio-pci (and unbind it at close). Default false. */
  bind?: boolean;
  /** Own MSI-X vectors to wire (default: all of the device's). */
  vectors?: number;
  /** Require the bitmask header; HeaderError if BAR2 has none. Peers are then its live bits. */
  bitmask?: boolean;
  /** Without the header: the peers to ring, as IDs or { id, vectors }. */
  peers?: readonly (number | PeerVectors)[];
  /** Vectors assumed of a peer named by ID or seen in the live bits (default: own vectors; ivshmem servers give every peer the same). */
  peerVectors?: number;
  /** How often the live bits are looked at, in ms (default 100). */
  pollInterval?: number;
}

/** The BAR0 registers by name, as revision 1 defines them (the Doorbell is ring()). */
export interface GuestRegisters {
  read(register: Exclude<Bar0Register, 'Doorbell'>): number;
  write(register: 'IntrMask' | 'IntrStatus', value: number): void;
}

/** How often the lease word is renewed (the server's lease timeout is 2 s by default). */
const LEASE_INTERVAL_MS = 100;

export class GuestDevice extends EventEmitter<EndpointEvents> implements Endpoint {
  /** The device as sysfs described it when it was opened. */
  readonly info: GuestDeviceInfo;
  readonly id: number;
  readonly interrupts: 'vfio' | 'none';
  /** An 'interrupt' event's count is MSI-X interrupts the guest kernel took (see Endpoint). */
  readonly countsInjections = true;
  readonly registers: GuestRegisters;
  readonly #vfio: VfioDevice | null;
  readonly #sysfs: { registers: PciRegisters; memory: SharedMemory } | null;
  readonly #memory: MemoryView;
  readonly #table: InterruptTable;
  readonly #layout: HeaderLayout | null;
  readonly #live: BitWords | null;
  #lease: LeaseKeeper | null = null;
  readonly #peerVectors: number;
  readonly #unbind: () => void;
  #known = new Set<number>();
  #timer: NodeJS.Timeout | null = null;
  #closed = false;

  /**
   * Opens the ivshmem device (see GuestDeviceOptions). DeviceError (with `reason`) when it is
   * not there, not bound as needed, or VFIO or an IOMMU is missing; HeaderError for a bitmask
   * header that is missing or claims more than BAR2; system errors (code, syscall, path) for the
   * rest. Whatever fails, nothing stays open, mapped or bound by this call.
   */
  static open(options: GuestDeviceOptions = {}): GuestDevice {
    const interrupts = options.interrupts ?? 'vfio';
    if (interrupts !== 'vfio' && interrupts !== 'none') throw new RangeError(`interrupts must be 'vfio' or 'none', got ${String(interrupts)}`);
    if (options.vectors !== undefined) check.integer('vectors', options.vectors, 1, 2048);
    if (options.peerVectors !== undefined) check.integer('peerVectors', options.peerVectors, 1, 65535);
    if (options.pollInterval !== undefined) check.integer('pollInterval', options.pollInterval, 1, 2 ** 31 - 1);
    // Looked at once; again only after a binding changed what sysfs says.
    const found = options.address === undefined ? onlyDevice() : describeDevice(options.address);
    const address = found.address;
    let unbind = (): void => {};
    let vfio: VfioDevice | null = null;
    let sysfs: { registers: PciRegisters; memory: SharedMemory } | null = null;
    try {
      if (interrupts === 'vfio') {
        unbind = prepareVfio(found, options.bind === true);
        vfio = openVfio(address);
      } else {
        sysfs = openSysfs(found);
      }
      return new GuestDevice(found.driver === 'vfio-pci' || interrupts === 'none' ? found : describeDevice(address), interrupts, vfio, sysfs, unbind, options);
    } catch (error) {
      vfio?.close();
      sysfs?.registers.close();
      sysfs?.memory.close();
      unbind();
      throw error;
    }
  }

  private constructor(
    info: GuestDeviceInfo,
    interrupts: 'vfio' | 'none',
    vfio: VfioDevice | null,
    sysfs: { registers: PciRegisters; memory: SharedMemory } | null,
    unbind: () => void,
    options: GuestDeviceOptions,
  ) {
    super();
    this.info = info;
    this.interrupts = interrupts;
    this.#vfio = vfio;
    this.#sysfs = sysfs;
    this.#unbind = unbind;
    const regs: DeviceRegisters = vfio?.registers ?? sysfs!.registers;
    this.#memory = vfio?.memory ?? sysfs!.memory;
    const position = regs.read32(Bar0.IVPosition);
    if (position > 0xffff) {
      throw new DeviceError('no-device', info.address, `IVPosition of ${info.address} is 0x${position.toString(16)}: the device has no peer ID (not connected to an ivshmem server: ivshmem-plain?)`);
    }
    this.id = position;
    this.#layout = options.bitmask === true ? readHeader(lowBuffer(this.#memory)) : null;
    if (this.#layout !== null && this.id >= this.#layout.maxPeers) {
      throw new HeaderError(`peer ID ${this.id} is beyond the header's ${this.#layout.maxPeers} bits`);
    }
    const layout = this.#layout;
    this.#table = new InterruptTable({
      self: this.id,
      onInterrupt: (vector, count) => this.emit('interrupt', vector, count),
      doorbell: { registers: regs, offset: Bar0.Doorbell },
      ...(layout === null ? {} : { bitmask: { memory: lowBuffer(this.#memory), layout } }),
    });
    try {
      const own = options.vectors ?? info.msixVectors ?? 1;
      if (vfio !== null) {
        if (vfio.msixVectors === 0) throw new DeviceError('no-device', info.address, `${info.address} has no MSI-X vectors (ivshmem-plain?): open it with interrupts: 'none'`);
        // The device keeps its EventFds; the table watches copies of them.
        for (const e of vfio.enableInterrupts(Math.min(own, vfio.msixVectors))) this.#table.add(this.id, dupFd(e.fd));
      } else {
        this.#table.setVectors(this.id, own);
      }
      this.#peerVectors = options.peerVectors ?? this.#table.vectorsOf(this.id);
      this.#live = layout === null ? null : new BitWords(lowBuffer(this.#memory), layout.liveOffset, layout.words);
      const leaseAt = layout === null || layout.leaseOffset === 0 ? null : layout.leaseOffset + 4 * this.id;
      this.#lease =
        leaseAt === null ? null : vfio !== null ? vfio.keepLease(leaseAt, LEASE_INTERVAL_MS) : new LeaseKeeper(sysfs!.memory.fd, 0, leaseAt, LEASE_INTERVAL_MS);
      if (this.#live === null) {
        for (const p of options.peers ?? []) {
          if (typeof p === 'number') this.addPeer(p);
          else this.addPeer(p.id, p.vectors);
        }
      } else {
        this.#refresh(false);
        this.#timer = setInterval(() => this.#refresh(true), options.pollInterval ?? 100);
        this.#timer.unref();
      }
    } catch (error) {
      this.#lease?.stop();
      this.#table.close();
      throw error;
    }
    const read = (register: Bar0Register): number => {
      this.#open();
      return regs.read32(Bar0[register]);
    };
    this.registers = Object.freeze({
      read: (register: Exclude<Bar0Register, 'Doorbell'>): number => read(register),
      write: (register: 'IntrMask' | 'IntrStatus', value: number): void => {
        this.#open();
        if (register !== 'IntrMask' && register !== 'IntrStatus') throw new RangeError(`${String(register)} cannot be written (the Doorbell is ring())`);
        regs.write32(Bar0[register], value);
      },
    });
  }

  /** Every ivshmem device of this system (sysfs). */
  static list(): GuestDeviceInfo[] {
    return listDevices();
  }

  get address(): string {
    return this.info.address;
  }

  /** BAR2, the shared memory. ClosedError once closed. */
  get shm(): MemoryView {
    if (this.#closed) throw new ClosedError('GuestDevice');
    return this.#memory;
  }

  get vectors(): number {
    return this.#table.vectorsOf(this.id);
  }

  get closed(): boolean {
    return this.#closed;
  }

  get header(): HeaderLayout {
    if (this.#layout === null) throw new RangeError('this device was not opened with bitmask: true');
    return this.#layout;
  }

  get pendingBits(): PendingBits {
    void this.header; // the RangeError without the header
    this.#open();
    return this.#table.pendingWords!;
  }

  /** The other peers that can be rung: the live bits' (bitmask), or the ones added. */
  peers(): PeerVectors[] {
    if (this.#closed) return [];
    if (this.#live !== null) this.#refresh(true);
    return this.#table.peers();
  }

  vectorsOf(id: number): number {
    return this.#table.vectorsOf(id);
  }

  /**
   * Without the bitmask header: peer `id` can be rung (on `vectors`, default peerVectors) from
   * now on. 'peer-joined' is emitted for a peer not known before.
   */
  addPeer(id: number, vectors: number = this.#peerVectors): void {
    this.#open();
    if (this.#live !== null) throw new RangeError('with the bitmask header the peers are its live bits');
    check.integer('id', id, 0, 0xffff);
    if (id === this.id) throw new RangeError(`${id} is this device's own ID`);
    check.integer('vectors', vectors, 1, 65535);
    const known = this.#known.has(id);
    this.#table.setVectors(id, vectors);
    this.#known.add(id);
    if (!known) this.emit('peer-joined', id);
  }

  /** Without the bitmask header: peer `id` is rung no more ('peer-left' if it was known). */
  removePeer(id: number): void {
    this.#open();
    if (this.#live !== null) throw new RangeError('with the bitmask header the peers are its live bits');
    check.integer('id', id, 0, 0xffff);
    if (!this.#known.delete(id)) return;
    this.#table.setVectors(id, 0);
    this.emit('peer-left', id);
  }

  /** Resolves once peer `id` can be rung; TimeoutError after `timeout` ms (default 5000), ClosedError on close. */
  waitForPeer(id: number, timeout = 5000): Promise<void> {
    if (this.#live !== null) this.#refresh(true);
    return waitForPeer(this, id, timeout, 'GuestDevice');
  }

  /**
   * Rings `peer` on `vector`: one write of `peer << 16 | vector` to the Doorbell register (own ID
   * included: QEMU delivers it to this device's own vector). RangeError for a peer or vector not known.
   */
  ring(peer: number, vector = 0): void {
    this.#open();
    check.integer('peer', peer, 0, 0xffff);
    check.integer('vector', vector, 0, 0xffff);
    if (!this.#table.signal(peer, vector)) {
      const known = this.vectorsOf(peer);
      throw new RangeError(known === 0 ? `peer ${peer} is not known to peer ${this.id}` : `peer ${peer} has no vector ${vector} (it has ${known})`);
    }
  }

  counters(): InterruptCounters {
    this.#open();
    return this.#table.counters();
  }

  resetCounters(): void {
    this.#open();
    this.#table.resetCounters();
  }

  /**
   * Stops looking at the live bits, closes the interrupt watchers and their eventfds, turns MSI-X
   * off, unmaps BAR0 and BAR2, closes the VFIO fds, and unbinds the device if open() bound it.
   * Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    try {
      this.#lease?.stop(); // cleared: gone at once, not after the lease timeout
      this.#table.close();
      this.#vfio?.close();
      this.#sysfs?.registers.close();
      this.#sysfs?.memory.close();
    } finally {
      this.#unbind();
      this.emit('close');
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #open(): void {
    if (this.#closed) throw new ClosedError('GuestDevice');
  }

  /** Makes the table's peers the live bits' (not the own one), telling joins and leaves when `tell`. */
  #refresh(tell: boolean): void {
    if (this.#closed || this.#live === null) return;
    const live = new Set(this.#live.ids().filter((id) => id !== this.id));
    const joined: number[] = [];
    const left: number[] = [];
    for (const id of live) {
      if (!this.#known.has(id)) {
        this.#table.setVectors(id, this.#peerVectors);
        joined.push(id);
      }
    }
    for (const id of this.#known) {
      if (!live.has(id)) {
        this.#table.setVectors(id, 0);
        left.push(id);
      }
    }
    this.#known = live;
    if (!tell) return;
    for (const id of left) this.emit('peer-left', id);
    for (const id of joined) this.emit('peer-joined', id);
  }
}

/** Makes sure vfio-pci holds the device (binding it when asked); returns how to undo what it did. */
function prepareVfio(info: GuestDeviceInfo, bind: boolean): () => void {
  const address = info.address;
  if (info.driver === 'vfio-pci') return () => {};
  if (info.driver !== null) {
    throw new DeviceError(
      'bound-elsewhere',
      address,
      `${address} is bound to ${info.driver}; interrupts: 'vfio' needs vfio-pci (unbind it: echo ${address} > ${join(sysfsPath(address), 'driver/unbind')})`,
    );
  }
  if (info.iommuGroup === null) throw noIommu(address);
  if (!vfioPciLoaded()) throw new DeviceError('no-vfio', address, `the vfio-pci driver is not loaded: modprobe vfio-pci (or open with interrupts: 'none' for memory and rings without interrupts)`);
  if (!bind) {
    throw new DeviceError(
      'not-bound',
      address,
      `${address} is not bound to vfio-pci: open with bind: true (ivshmem guest peer binds it itself), or: echo vfio-pci > ${join(sysfsPath(address), 'driver_override')}; echo ${address} > /sys/bus/pci/drivers_probe`,
    );
  }
  return bindVfio(address);
}

function noIommu(address: string): DeviceError {
  return new DeviceError(
    'no-iommu-group',
    address,
    `${address} has no IOMMU group, so VFIO cannot take it: give QEMU -machine q35 -device intel-iommu,intremap=on (before the ivshmem device) and the guest kernel intel_iommu=on; or open with interrupts: 'none'`,
  );
}

function openVfio(address: string): VfioDevice {
  try {
    return VfioDevice.open(address);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const path = (error as { path?: string }).path;
    if (code === 'ENOENT' && path === '/dev/vfio/vfio') {
      throw new DeviceError('no-vfio', address, 'VFIO is not there (/dev/vfio/vfio is missing): modprobe vfio-pci', { cause: error });
    }
    if (code === 'EACCES' || code === 'EPERM') {
      throw new DeviceError('permission', address, `no permission to open ${path ?? 'the VFIO device'}: run as root, or give this user the group's /dev/vfio node`, { cause: error });
    }
    if (code === 'EBUSY' && (error as { reason?: string }).reason !== 'not-viable') {
      throw new DeviceError('busy', address, `${address} is in use: another process has its VFIO group ${path ?? ''} open`, { cause: error });
    }
    throw error;
  }
}

/** BAR0 and BAR2 of a device no driver holds, through its sysfs resource files. */
function openSysfs(info: GuestDeviceInfo): { registers: PciRegisters; memory: SharedMemory } {
  const address = info.address;
  if (info.driver !== null) {
    throw new DeviceError(
      'bound-elsewhere',
      address,
      `${address} is bound to ${info.driver}; interrupts: 'none' maps it through sysfs, which the kernel allows only while no driver holds it${info.driver === 'vfio-pci' ? " (open it with interrupts: 'vfio')" : ''}`,
    );
  }
  const dir = sysfsPath(address);
  let registers: PciRegisters;
  try {
    registers = new PciRegisters(join(dir, 'resource0'), info.bar0.size, info.bar0.start % 4096);
  } catch (error) {
    throw sysfsError(error, address);
  }
  try {
    let fd: number;
    try {
      fd = openSync(join(dir, 'resource2'), 'r+');
    } catch (error) {
      throw sysfsError(error, address);
    }
    return { registers, memory: SharedMemory.fromFd(fd) }; // fromFd owns fd, also when it throws
  } catch (error) {
    registers.close();
    throw error;
  }
}

function sysfsError(error: unknown, address: string): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM') {
    return new DeviceError('permission', address, `no permission to map ${address}'s BARs through sysfs: run as root`, { cause: error });
  }
  return error;
}
