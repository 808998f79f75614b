/**
 * VfioDevice on the host, where no device is bound to vfio-pci: the typed errors of open().
 * What it does with a device is test/guest/vfio.test.ts (inside a QEMU guest).
 */
import { existsSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DeviceError, ErrorCodes, isDeviceError, isIvshmemError } from '../../lib/index.js';
import { VfioDevice } from '../../lib/sys/index.js';

function openError(address: string): DeviceError {
  try {
    VfioDevice.open(address);
  } catch (error) {
    expect(isDeviceError(error), String(error)).toBe(true);
    expect(isIvshmemError(error)).toBe(true);
    return error as DeviceError;
  }
  throw new Error(`VfioDevice.open(${address}) did not throw`);
}

/** A PCI device of this machine without an IOMMU group, if there is one. */
function deviceWithoutGroup(): string | undefined {
  const dir = '/sys/bus/pci/devices';
  if (!existsSync(dir)) return undefined;
  return readdirSync(dir).find((d) => !existsSync(`${dir}/${d}/iommu_group`));
}

describe('VfioDevice.open', () => {
  it('a string that is no PCI address, or an address with no device: bad-address', () => {
    for (const bad of ['', 'nonsense', '0000:00:02', '00:02.8', '0000:00:20.0']) {
      const e = openError(bad);
      expect(e).toMatchObject({ name: 'DeviceError', code: ErrorCodes.DEVICE, reason: 'bad-address', address: bad });
      expect(e.message).toContain('not a PCI address');
    }
    const e = openError('ffff:ff:1f.7');
    expect(e).toMatchObject({ reason: 'bad-address', address: 'ffff:ff:1f.7' });
    expect(e.message).toContain('/sys/bus/pci/devices/ffff:ff:1f.7 does not exist');
  });

  it.skipIf(deviceWithoutGroup() === undefined)('a device without IOMMU group (no IOMMU here): no-iommu-group, naming the device', () => {
    const address = deviceWithoutGroup()!;
    const short = address.replace(/^0000:/, '');
    const e = openError(short);
    expect(e).toMatchObject({ reason: 'no-iommu-group', address: short });
    expect(e.message).toContain(`${address}/iommu_group`);
    expect((e.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  it('a non-string address is a TypeError', () => {
    expect(() => VfioDevice.open(2 as unknown as string)).toThrow(TypeError);
  });
});
