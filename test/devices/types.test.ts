/**
 * The register maps are typed: a wrong register name, a wrong access width, a write to a
 * read-only register and a read of a write-only register do not compile. Every
 * `@ts-expect-error` below is checked by `tsc -p tsconfig.json --noEmit` (the `pretest` step):
 * if one of those lines ever compiled, the directive itself would be an error.
 *
 * The misuses sit in functions that are never called; vitest only checks that they exist and
 * that the register maps say what the types are built from.
 */
import { describe, expect, expectTypeOf, it } from 'vitest';
import { BITMASK_REGISTERS, LEGACY2010_REGISTERS, QEMU_REGISTERS, type BitmaskDevice, type BitmaskRegisters, type Legacy2010Device, type Legacy2010Registers, type QemuDevice, type QemuRegisters, type ReadableOf, type WritableOf } from '../../lib/devices/index.js';

function legacyMisuse(d: Legacy2010Device): void {
  // Correct uses compile.
  d.readw('IntrStatus');
  d.readw('IntrMask');
  d.readw('IVPosition');
  d.readw('IVLiveList');
  d.writew('IntrMask', 0xffff);
  d.writew('Doorbell', 0x0101);

  // @ts-expect-error: no such register
  d.readw('IntrStatu');
  // @ts-expect-error: no such register (a QEMU one)
  d.writew('PendingClear', 1);
  // @ts-expect-error: wrong width: the 2010 device has 16-bit registers only (no readl)
  d.readl('IntrStatus');
  // @ts-expect-error: wrong width: no 32-bit write either
  d.writel('Doorbell', 0x0101);
  // @ts-expect-error: write to a read-only register
  d.writew('IVPosition', 1);
  // @ts-expect-error: write to a read-only register
  d.writew('IntrStatus', 0);
  // @ts-expect-error: write to a read-only register
  d.writew('IVLiveList', 0);
  // @ts-expect-error: read of a write-only register
  d.readw('Doorbell');
}

function qemuMisuse(d: QemuDevice): void {
  d.readl('IntrMask');
  d.readl('IntrStatus');
  d.readl('IVPosition');
  d.writel('IntrMask', 1);
  d.writel('IntrStatus', 1);
  d.writel('Doorbell', 0x0001_0000);

  // @ts-expect-error: no such register
  d.readl('IVLiveList');
  // @ts-expect-error: no such register
  d.writel('doorbell', 1);
  // @ts-expect-error: wrong width: QEMU's registers are 32-bit (no readw)
  d.readw('IntrStatus');
  // @ts-expect-error: wrong width: no 16-bit write
  d.writew('Doorbell', 1);
  // @ts-expect-error: write to a read-only register
  d.writel('IVPosition', 1);
  // @ts-expect-error: read of a write-only register
  d.readl('Doorbell');
}

function bitmaskMisuse(d: BitmaskDevice): void {
  d.readl('IVPosition');
  d.writel('Doorbell', 1);
  d.writel('PendingClear', 1);

  // @ts-expect-error: no such register
  d.readl('Pending');
  // @ts-expect-error: wrong width
  d.readw('IVPosition');
  // @ts-expect-error: write to a read-only register
  d.writel('IVPosition', 1);
  // @ts-expect-error: read of a write-only register
  d.readl('PendingClear');
  // @ts-expect-error: read of a write-only register
  d.readl('Doorbell');
}

describe('typed register maps', () => {
  it('the register unions are exactly the readable and writable registers of each width', () => {
    expectTypeOf<ReadableOf<Legacy2010Registers, 16>>().toEqualTypeOf<'IntrMask' | 'IntrStatus' | 'IVPosition' | 'IVLiveList'>();
    expectTypeOf<WritableOf<Legacy2010Registers, 16>>().toEqualTypeOf<'IntrMask' | 'Doorbell'>();
    expectTypeOf<ReadableOf<Legacy2010Registers, 32>>().toEqualTypeOf<never>();
    expectTypeOf<ReadableOf<QemuRegisters, 32>>().toEqualTypeOf<'IntrMask' | 'IntrStatus' | 'IVPosition'>();
    expectTypeOf<WritableOf<QemuRegisters, 32>>().toEqualTypeOf<'IntrMask' | 'IntrStatus' | 'Doorbell'>();
    expectTypeOf<WritableOf<QemuRegisters, 16>>().toEqualTypeOf<never>();
    expectTypeOf<ReadableOf<BitmaskRegisters, 32>>().toEqualTypeOf<'IVPosition'>();
    expectTypeOf<WritableOf<BitmaskRegisters, 32>>().toEqualTypeOf<'Doorbell' | 'PendingClear'>();

    // The misuse functions exist (and compile only thanks to their @ts-expect-error lines).
    expect([legacyMisuse, qemuMisuse, bitmaskMisuse].map((f) => typeof f)).toEqual(['function', 'function', 'function']);
  });

  it('the maps carry the documented offsets, widths and access', () => {
    expect(LEGACY2010_REGISTERS).toEqual({
      IntrMask: { offset: 0, width: 16, access: 'rw' },
      IntrStatus: { offset: 2, width: 16, access: 'r' },
      Doorbell: { offset: 4, width: 16, access: 'w' },
      IVPosition: { offset: 6, width: 16, access: 'r' },
      IVLiveList: { offset: 8, width: 16, access: 'r' },
    });
    expect(QEMU_REGISTERS).toEqual({
      IntrMask: { offset: 0x00, width: 32, access: 'rw' },
      IntrStatus: { offset: 0x04, width: 32, access: 'rw' },
      IVPosition: { offset: 0x08, width: 32, access: 'r' },
      Doorbell: { offset: 0x0c, width: 32, access: 'w' },
    });
    expect(BITMASK_REGISTERS.IVPosition.access).toBe('r');
    expect(BITMASK_REGISTERS.Doorbell.access).toBe('w');
    expect(BITMASK_REGISTERS.PendingClear.access).toBe('w');
  });
});
