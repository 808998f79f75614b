/**
 * Finding ivshmem devices from inside a VM (sysfs: /sys/bus/pci/devices) and handing one to
 * vfio-pci through driver_override. Plain file reads and writes: no native code.
 */
import { existsSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { DeviceError } from '../core/errors.js';
import { IVSHMEM_DEVICE_ID, IVSHMEM_VENDOR_ID, msixVectorsOf } from '../protocol/pci.js';
import { pciAddress } from '../core/validate.js';

const devicesDir = (): string => '/sys/bus/pci/devices';
const driversDir = (): string => '/sys/bus/pci/drivers';

/** The sysfs directory of a device at a normalized address (no check that it is there). */
export const sysfsPath = (address: string): string => join(devicesDir(), address);

/** One BAR as sysfs `resource` lists it. */
export interface BarInfo {
  /** Physical (guest) address; 0 if unassigned. */
  readonly start: number;
  readonly size: number;
}

/** An ivshmem PCI device (1af4:1110) as the guest kernel sees it. */
export interface GuestDeviceInfo {
  /** 'DDDD:BB:DD.F'. */
  readonly address: string;
  /** PCI revision: 1 for QEMU's ivshmem-plain and ivshmem-doorbell. */
  readonly revision: number;
  /** BAR0 (registers) and BAR2 (the shared memory). */
  readonly bar0: BarInfo;
  readonly bar2: BarInfo;
  /** MSI-X vectors (0: ivshmem-plain, none); null where config space could not be read whole (not root). */
  readonly msixVectors: number | null;
  /** The driver holding it ('vfio-pci', …), or null. */
  readonly driver: string | null;
  /** What `driver_override` names, or null. */
  readonly driverOverride: string | null;
  /** The IOMMU group number, or null without an IOMMU. */
  readonly iommuGroup: number | null;
}

function read(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

function link(path: string): string | null {
  try {
    return basename(readlinkSync(path));
  } catch {
    return null;
  }
}

/** BAR n from sysfs `resource` text (a line `start end flags` per resource, hex). */
export function barOf(resource: string, n: number): BarInfo {
  const line = resource.split('\n')[n];
  const [start, end] = (line ?? '').trim().split(/\s+/).map((h) => Number(h));
  if (start === undefined || end === undefined || !Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end <= start) {
    return { start: 0, size: 0 };
  }
  return { start, size: end - start + 1 };
}

/** The device directory of `address` (normalized), or DeviceError 'bad-address' / 'not-ivshmem'. */
export function deviceDir(address: string): string {
  const full = pciAddress(address);
  const dir = join(devicesDir(), full);
  if (!existsSync(dir)) throw new DeviceError('bad-address', address, `no PCI device ${full} (${dir} does not exist)`);
  const vendor = Number(read(join(dir, 'vendor')));
  const device = Number(read(join(dir, 'device')));
  if (vendor !== IVSHMEM_VENDOR_ID || device !== IVSHMEM_DEVICE_ID) {
    throw new DeviceError('not-ivshmem', address, `PCI device ${full} is ${hex4(vendor)}:${hex4(device)}, not an ivshmem device (1af4:1110)`);
  }
  return dir;
}

const hex4 = (n: number): string => (Number.isInteger(n) ? n.toString(16).padStart(4, '0') : '????');

/** What sysfs says of the ivshmem device at `address`. */
export function describeDevice(address: string): GuestDeviceInfo {
  const dir = deviceDir(address);
  const resource = read(join(dir, 'resource')) ?? '';
  let config: Uint8Array | null = null;
  try {
    config = readFileSync(join(dir, 'config'));
  } catch {
    config = null;
  }
  const override = read(join(dir, 'driver_override'));
  const group = link(join(dir, 'iommu_group'));
  return Object.freeze({
    address: basename(dir),
    revision: Number(read(join(dir, 'revision')) ?? Number.NaN),
    bar0: barOf(resource, 0),
    bar2: barOf(resource, 2),
    msixVectors: config === null ? null : msixVectorsOf(config),
    driver: link(join(dir, 'driver')),
    driverOverride: override === null || override === '(null)' || override === '' ? null : override,
    iommuGroup: group === null ? null : Number(group),
  });
}

/** Every ivshmem device (1af4:1110) of this system, by address; [] where there is no PCI bus. */
export function listDevices(): GuestDeviceInfo[] {
  let names: string[];
  try {
    names = readdirSync(devicesDir()).sort();
  } catch {
    return [];
  }
  const out: GuestDeviceInfo[] = [];
  for (const name of names) {
    const dir = join(devicesDir(), name);
    if (Number(read(join(dir, 'vendor'))) !== IVSHMEM_VENDOR_ID || Number(read(join(dir, 'device'))) !== IVSHMEM_DEVICE_ID) continue;
    try {
      out.push(describeDevice(name));
    } catch {
      // gone meanwhile (hot unplug)
    }
  }
  return out;
}

/** The one ivshmem device, or DeviceError 'no-device' when there is none or several. */
export function onlyDevice(): GuestDeviceInfo {
  const all = listDevices();
  if (all.length === 1) return all[0]!;
  if (all.length === 0) {
    throw new DeviceError('no-device', '', 'no ivshmem device (1af4:1110) in this system: start QEMU with -device ivshmem-doorbell,chardev=… (or ivshmem-plain)');
  }
  throw new DeviceError('no-device', '', `${all.length} ivshmem devices (${all.map((d) => d.address).join(', ')}): say which one (address / --device)`);
}

function writeSysfs(path: string, text: string, address: string, what: string): void {
  try {
    writeFileSync(path, text);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') {
      throw new DeviceError('permission', address, `${what}: writing ${path} needs root (${code})`, { cause });
    }
    throw new DeviceError('bind-failed', address, `${what}: writing ${path} failed (${code ?? String(cause)})`, { cause });
  }
}

/** Whether the vfio-pci driver is there (its module loaded). */
export function vfioPciLoaded(): boolean {
  return existsSync(join(driversDir(), 'vfio-pci'));
}

/**
 * Binds the device at `address` (normalized), which no driver holds (the caller checked:
 * GuestDevice.open), to vfio-pci:
 * driver_override, then drivers_probe. Returns how to undo it. DeviceError 'permission' when
 * sysfs may not be written, 'bind-failed' if vfio-pci did not take it (driver_override is
 * restored then).
 */
export function bindVfio(address: string): () => void {
  const dir = sysfsPath(address);
  const restore = (): void => {
    try {
      writeFileSync(join(dir, 'driver_override'), '\n');
    } catch {
      // best effort: the device is unbound either way
    }
  };
  writeSysfs(join(dir, 'driver_override'), 'vfio-pci', address, `binding ${address} to vfio-pci`);
  try {
    writeSysfs('/sys/bus/pci/drivers_probe', address, address, `binding ${address} to vfio-pci`);
    const now = link(join(dir, 'driver'));
    if (now !== 'vfio-pci') {
      throw new DeviceError('bind-failed', address, `${address} was offered to vfio-pci but is bound to ${now ?? 'no driver'} (see dmesg)`);
    }
  } catch (error) {
    restore();
    throw error;
  }
  return () => {
    if (link(join(dir, 'driver')) === 'vfio-pci') {
      try {
        writeFileSync(join(dir, 'driver', 'unbind'), address);
      } catch {
        // best effort at close: nothing else can be done
      }
    }
    restore();
  };
}
