/**
 * The pure PCI helpers: PCI addresses (lib/core/validate.ts), the MSI-X vector count from
 * config-space bytes and the Doorbell value (lib/protocol/pci.ts), and BARs from sysfs `resource`
 * text (lib/guest/discovery.ts). Config spaces are built byte by byte here.
 */
import { describe, expect, it } from 'vitest';
import { DeviceError, ErrorCodes, isDeviceError } from '../../lib/core/errors.js';
import { pciAddress } from '../../lib/core/validate.js';
import { barOf } from '../../lib/guest/discovery.js';
import { BAR0_SIZE, Bar0, doorbellValue, msixVectorsOf } from '../../lib/protocol/pci.js';

function addressError(address: string): DeviceError {
  try {
    pciAddress(address);
  } catch (error) {
    expect(isDeviceError(error), String(error)).toBe(true);
    return error as DeviceError;
  }
  throw new Error(`pciAddress(${JSON.stringify(address)}) did not throw`);
}

describe('pciAddress', () => {
  it('gives DDDD:BB:DD.F from DDDD:BB:DD.F or BB:DD.F (domain 0000), lower case and trimmed', () => {
    expect(pciAddress('0000:00:02.0')).toBe('0000:00:02.0');
    expect(pciAddress('00:02.0')).toBe('0000:00:02.0');
    expect(pciAddress('ABCD:EF:1F.7')).toBe('abcd:ef:1f.7');
    expect(pciAddress('  0000:0a:10.3\n')).toBe('0000:0a:10.3');
    expect(pciAddress('\t3b:00.1 ')).toBe('0000:3b:00.1');
    expect(pciAddress('ffff:ff:1f.7')).toBe('ffff:ff:1f.7');
  });

  it("anything else is a DeviceError 'bad-address' with the address as given", () => {
    for (const bad of ['nonsense', '00:20.0', '0000:00:02.8', '0000:00:20.0', '', ' ', '0000:00:02', '00:02', '00000:00:02.0', '000:00:02.0', '0000:000:02.0', '0000:00:2.0', '0000-00-02.0', '0000:00:02.0.0', 'g000:00:02.0']) {
      const e = addressError(bad);
      expect(e).toBeInstanceOf(DeviceError);
      expect(e).toMatchObject({ name: 'DeviceError', code: ErrorCodes.DEVICE, reason: 'bad-address', address: bad });
      expect(e.message).toContain(JSON.stringify(bad));
      expect(e.message).toContain('not a PCI address');
    }
  });

  it('a non-string is a TypeError', () => {
    expect(() => pciAddress(2 as unknown as string)).toThrow(TypeError);
    expect(() => pciAddress(null as unknown as string)).toThrow(TypeError);
  });
});

/** Config space of `length` bytes (default 256), capability list bit set when `caps` has entries. */
function configSpace(caps: { at: number; id: number; next: number; control?: number }[], options: { length?: number; first?: number } = {}): Uint8Array {
  const c = new Uint8Array(options.length ?? 256);
  c[0] = 0xf4; // vendor 1af4
  c[1] = 0x1a;
  c[2] = 0x10; // device 1110
  c[3] = 0x11;
  if (caps.length > 0 || options.first !== undefined) {
    c[0x06] = 0x10; // PCI_STATUS_CAP_LIST
    c[0x34] = options.first ?? caps[0]!.at;
  }
  for (const cap of caps) {
    c[cap.at] = cap.id;
    c[cap.at + 1] = cap.next;
    const control = cap.control ?? 0;
    c[cap.at + 2] = control & 0xff;
    c[cap.at + 3] = control >> 8;
  }
  return c;
}

const PM = 0x01;
const MSI = 0x05;
const VENDOR = 0x09;
const MSIX = 0x11;

describe('msixVectorsOf', () => {
  it('no capability list bit: 0, whatever the pointer says', () => {
    const c = configSpace([{ at: 0x40, id: MSIX, next: 0, control: 0x001 }]);
    c[0x06] = 0; // list bit cleared, the capability still there
    expect(msixVectorsOf(c)).toBe(0);
    expect(msixVectorsOf(new Uint8Array(256))).toBe(0);
  });

  it('PM, then MSI-X with table size field 0x001: 2 vectors', () => {
    const c = configSpace([
      { at: 0x40, id: PM, next: 0x50, control: 0x0003 },
      { at: 0x50, id: MSIX, next: 0x00, control: 0x001 },
    ]);
    expect(msixVectorsOf(c)).toBe(2);
  });

  it('the table size is the low 11 bits plus one (enable and mask bits ignored)', () => {
    const msix = (control: number): number | null => msixVectorsOf(configSpace([{ at: 0x40, id: MSIX, next: 0, control }]));
    expect(msix(0x000)).toBe(1);
    expect(msix(0x7ff)).toBe(2048);
    expect(msix(0xc001)).toBe(2); // MSI-X enable | function mask, table size 1
    expect(msix(0x8000 | 0x03f)).toBe(64);
  });

  it('follows the list past other capabilities; the pointers\' low two bits are ignored', () => {
    const c = configSpace(
      [
        { at: 0x40, id: VENDOR, next: 0x62 }, // 0x62 & 0xfc = 0x60
        { at: 0x60, id: MSI, next: 0x9b }, // 0x98
        { at: 0x98, id: PM, next: 0xc0 },
        { at: 0xc0, id: MSIX, next: 0, control: 0x00f },
      ],
      { first: 0x41 },
    );
    expect(msixVectorsOf(c)).toBe(16);
  });

  it('a list without MSI-X, or an empty one: 0', () => {
    expect(msixVectorsOf(configSpace([{ at: 0x40, id: PM, next: 0 }, { at: 0x48, id: MSI, next: 0 }]))).toBe(0);
    expect(msixVectorsOf(configSpace([], { first: 0 }))).toBe(0);
  });

  it('a looping list terminates, with 0', () => {
    expect(msixVectorsOf(configSpace([{ at: 0x40, id: PM, next: 0x40 }]))).toBe(0);
    expect(
      msixVectorsOf(
        configSpace([
          { at: 0x40, id: PM, next: 0x50 },
          { at: 0x50, id: MSI, next: 0x40 },
        ]),
      ),
    ).toBe(0);
  });

  it('fewer than 64 bytes: null (the bytes do not reach the list)', () => {
    const full = configSpace([{ at: 0x40, id: MSIX, next: 0, control: 1 }]);
    expect(msixVectorsOf(full.subarray(0, 63))).toBeNull();
    expect(msixVectorsOf(new Uint8Array(0))).toBeNull();
    expect(msixVectorsOf(new Uint8Array(10))).toBeNull();
  });

  it('a pointer past the end of the bytes read: null (an unprivileged read of 64 bytes)', () => {
    const full = configSpace([
      { at: 0x40, id: PM, next: 0x50 },
      { at: 0x50, id: MSIX, next: 0, control: 1 },
    ]);
    expect(msixVectorsOf(full)).toBe(2);
    expect(msixVectorsOf(full.subarray(0, 64))).toBeNull(); // the first capability is past byte 63
    expect(msixVectorsOf(full.subarray(0, 0x44))).toBeNull(); // PM in reach, MSI-X not
    expect(msixVectorsOf(full.subarray(0, 0x54))).toBe(2); // just in reach
    // Within 256 bytes the last dword is in reach; a capability header at 0xfc fits.
    expect(msixVectorsOf(configSpace([{ at: 0xfc, id: MSIX, next: 0, control: 3 }]))).toBe(4);
  });
});

describe('doorbellValue', () => {
  it('dest << 16 | vector, unsigned', () => {
    expect(doorbellValue(0, 0)).toBe(0);
    expect(doorbellValue(1, 2)).toBe(0x00010002);
    expect(doorbellValue(3, 0)).toBe(0x00030000);
    expect(doorbellValue(0x7fff, 0xffff)).toBe(0x7fffffff);
    expect(doorbellValue(0x8000, 0)).toBe(0x80000000);
    expect(doorbellValue(0x8001, 5)).toBe(2147549189);
    expect(doorbellValue(0xffff, 0xffff)).toBe(0xffffffff);
    for (const dest of [0x8000, 0x9abc, 0xffff]) expect(doorbellValue(dest, 1)).toBeGreaterThan(0);
  });

  it('the register map it is written to', () => {
    expect(Bar0).toEqual({ IntrMask: 0, IntrStatus: 4, IVPosition: 8, Doorbell: 12 });
    expect(BAR0_SIZE).toBe(256);
  });
});

describe('barOf (sysfs resource text)', () => {
  // /sys/bus/pci/devices/…/resource of an ivshmem-doorbell device: BAR0 256 bytes, BAR1 the
  // MSI-X table, BAR2 4 MiB (64-bit, prefetchable, above 4 GiB), then unused BARs and the ROM.
  const resource = [
    '0x00000000fea00000 0x00000000fea000ff 0x0000000000040200',
    '0x00000000fea01000 0x00000000fea01fff 0x0000000000040200',
    '0x000000fd00000000 0x000000fd003fffff 0x000000000014220c',
    '0x0000000000000000 0x0000000000000000 0x0000000000000000',
    '0x0000000000000000 0x0000000000000000 0x0000000000000000',
    '0x0000000000000000 0x0000000000000000 0x0000000000000000',
    '0x0000000000000000 0x0000000000000000 0x0000000000000000',
    '',
  ].join('\n');

  it('start and size (end - start + 1) of BAR n, from line n', () => {
    expect(barOf(resource, 0)).toEqual({ start: 0xfea00000, size: 256 });
    expect(barOf(resource, 1)).toEqual({ start: 0xfea01000, size: 4096 });
    expect(barOf(resource, 2)).toEqual({ start: 0xfd00000000, size: 4 * 1024 * 1024 });
  });

  it('an unused BAR (0x0 0x0 0x0, or zero-padded) is size 0', () => {
    expect(barOf('0x0 0x0 0x0', 0)).toEqual({ start: 0, size: 0 });
    expect(barOf(resource, 3)).toEqual({ start: 0, size: 0 });
    expect(barOf(resource, 6)).toEqual({ start: 0, size: 0 });
  });

  it('a missing line, garbage or an end before its start: size 0', () => {
    expect(barOf(resource, 7)).toEqual({ start: 0, size: 0 }); // the empty last line
    expect(barOf(resource, 20)).toEqual({ start: 0, size: 0 });
    expect(barOf('', 0)).toEqual({ start: 0, size: 0 });
    expect(barOf('nonsense here', 0)).toEqual({ start: 0, size: 0 });
    expect(barOf('0x1000', 0)).toEqual({ start: 0, size: 0 });
    expect(barOf('0x2000 0x1fff 0x0', 0)).toEqual({ start: 0, size: 0 });
  });

  it('surrounding blanks do not matter; the smallest BARs (4-byte I/O, 16-byte memory) have their sizes', () => {
    expect(barOf('  0x1000\t0x1fff   0x40200  ', 0)).toEqual({ start: 0x1000, size: 0x1000 });
    expect(barOf('0x0 0x0 0x0\n0xc000 0xc003 0x40101', 1)).toEqual({ start: 0xc000, size: 4 });
    expect(barOf('0xfebf0000 0xfebf000f 0x40200', 0)).toEqual({ start: 0xfebf0000, size: 16 });
    // An unassigned BAR keeps its size at start 0.
    expect(barOf('0x0 0xff 0x40200', 0)).toEqual({ start: 0, size: 256 });
  });
});
