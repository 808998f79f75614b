/**
 * PciRegisters over a real temporary file: the class maps any file as it maps a sysfs
 * `resource0` (a real MAP_SHARED mapping, not a mock), so what write32 stores is in the file and
 * what the file holds is what read32 loads. Bounds, the page offset, errors, close, and 1,000
 * open/close cycles that leave no fd, mapping or native resource behind.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ClosedError, ErrorCodes, isSystemError } from '../../lib/index.js';
import { native } from '../../lib/sys/binding.js';
import { PciRegisters } from '../../lib/sys/index.js';
import { deviceRegisters, registersHandle } from '../../lib/sys/registers.js';
import { Scratch } from '../helpers/paths.js';
import { turn } from '../helpers/wait.js';
import { fdCount, mapsMatching, systemError, thrown } from './helpers.js';

const FILE_SIZE = 8192;
const scratch = new Scratch();
const open: PciRegisters[] = [];

afterEach(() => {
  for (const r of open.splice(0)) r.close();
  scratch.cleanup();
});

/** A fresh FILE_SIZE-byte file, filled with `fill`. */
function registerFile(fill = 0): string {
  const path = scratch.path('bar', 'regs');
  writeFileSync(path, Buffer.alloc(FILE_SIZE, fill));
  return path;
}

function regs(path: string, size: number, offsetInPage?: number): PciRegisters {
  const r = offsetInPage === undefined ? new PciRegisters(path, size) : new PciRegisters(path, size, offsetInPage);
  open.push(r);
  return r;
}

const u32At = (path: string, at: number): number => readFileSync(path).readUInt32LE(at);

function putU32(path: string, at: number, value: number): void {
  const bytes = readFileSync(path);
  bytes.writeUInt32LE(value, at);
  writeFileSync(path, bytes);
}

/** Lines of /proc/self/maps that map `path`. */
const mapsOf = (path: string): number => mapsMatching(new RegExp(`${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`));

describe('PciRegisters over a file', () => {
  it('write32 stores into the file (little-endian, unsigned), and read32 loads what the file holds', () => {
    const path = registerFile();
    const r = regs(path, 256);
    expect([r.path, r.size, r.closed]).toEqual([path, 256, false]);
    r.write32(0, 0x12345678);
    r.write32(12, 0xffffffff);
    r.write32(252, 0x80000001);
    const bytes = readFileSync(path);
    expect([bytes.readUInt32LE(0), bytes.readUInt32LE(12), bytes.readUInt32LE(252)]).toEqual([0x12345678, 0xffffffff, 0x80000001]);
    expect([...bytes.subarray(0, 4)]).toEqual([0x78, 0x56, 0x34, 0x12]);
    // Nothing else in the file changed: each write32 is one 4-byte store.
    const rest = Buffer.concat([bytes.subarray(4, 12), bytes.subarray(16, 252), bytes.subarray(256)]);
    expect(rest.every((b) => b === 0)).toBe(true);
    // Loads come back unsigned.
    expect([r.read32(0), r.read32(12), r.read32(252), r.read32(4)]).toEqual([0x12345678, 0xffffffff, 0x80000001, 0]);

    putU32(path, 8, 0xdeadbeef);
    putU32(path, 100, 7);
    expect([r.read32(8), r.read32(100)]).toEqual([0xdeadbeef, 7]);
  });

  it('holds no fd while open (the mapping keeps the file), one mapping until close', () => {
    const path = registerFile();
    const fds = fdCount();
    const r = regs(path, 256);
    expect(fdCount()).toBe(fds);
    expect(mapsOf(path)).toBe(1);
    r.close();
    expect(mapsOf(path)).toBe(0);
    expect(fdCount()).toBe(fds);
  });

  it('offsetInPage: the registers start that many bytes into the first page', () => {
    const path = registerFile();
    putU32(path, 256, 0xa1a2a3a4);
    putU32(path, 256 + 12, 42);
    putU32(path, 252, 0x0badf00d); // just before the registers: out of reach
    const r = regs(path, 256, 256);
    expect([r.read32(0), r.read32(12)]).toEqual([0xa1a2a3a4, 42]);
    r.write32(4, 0x01020304);
    r.write32(252, 0xcafebabe);
    expect([u32At(path, 260), u32At(path, 508), u32At(path, 4), u32At(path, 252)]).toEqual([0x01020304, 0xcafebabe, 0, 0x0badf00d]);
    expect(() => r.read32(256)).toThrow(RangeError); // byte 512 of the file is past the registers
  });

  it('an offset not a multiple of 4, at or past size - 3, negative or not an integer is a RangeError', () => {
    const path = registerFile(0x55);
    const r = regs(path, 64);
    for (const bad of [1, 2, 3, 6, 61, 62, 63, 64, 68, 4096, -4, -1, 4.5, 0.1, Number.NaN, Infinity]) {
      expect(() => r.read32(bad), `read32(${bad})`).toThrow(RangeError);
      expect(() => r.write32(bad, 0), `write32(${bad})`).toThrow(RangeError);
    }
    expect(() => r.read32('4' as unknown as number)).toThrow(TypeError);
    // The last register is in reach, and nothing was written by the refused calls.
    expect(r.read32(60)).toBe(0x55555555);
    expect(readFileSync(path).every((b) => b === 0x55)).toBe(true);
  });

  it('a value beyond 0xffffffff, negative or not an integer is a RangeError and writes nothing', () => {
    const path = registerFile();
    const r = regs(path, 64);
    for (const bad of [0x100000000, 2 ** 53, -1, 1.5, Number.NaN]) {
      expect(() => r.write32(8, bad), `write32(8, ${bad})`).toThrow(RangeError);
    }
    expect(() => r.write32(8, '1' as unknown as number)).toThrow(TypeError);
    expect(readFileSync(path).every((b) => b === 0)).toBe(true);
    r.write32(8, 0xffffffff);
    expect(u32At(path, 8)).toBe(0xffffffff);
  });

  it('a size under 4, or an offsetInPage outside the page, is a RangeError that maps nothing', () => {
    const path = registerFile();
    const live = native.liveResources();
    const fds = fdCount();
    for (const size of [0, 1, 3, -4, 2.5]) expect(() => new PciRegisters(path, size), `size ${size}`).toThrow(RangeError);
    for (const offsetInPage of [-1, 4096, 1.5]) expect(() => new PciRegisters(path, 16, offsetInPage)).toThrow(RangeError);
    expect(() => new PciRegisters(7 as unknown as string, 16)).toThrow(TypeError);
    // The native class refuses a small size by itself too.
    const NativeRegisters = native.Registers;
    expect(() => new NativeRegisters(path, 0, 3)).toThrow(RangeError);
    expect([native.liveResources(), fdCount(), mapsOf(path)]).toEqual([live, fds, 0]);
    // Size 4 is one register.
    const r = regs(path, 4);
    r.write32(0, 9);
    expect(() => r.write32(4, 9)).toThrow(RangeError);
    expect(u32At(path, 0)).toBe(9);
  });

  it('a missing path is a system error ENOENT from open, naming the path, and leaves nothing behind', () => {
    const path = scratch.path('bar', 'missing');
    const live = native.liveResources();
    const fds = fdCount();
    const e = systemError(() => new PciRegisters(path, 256));
    expect(e).toMatchObject({ code: 'ENOENT', syscall: 'open', path });
    expect(e.errno).toBeLessThan(0);
    expect(e.message).toContain(path);
    expect([native.liveResources(), fdCount()]).toEqual([live, fds]);
  });

  it('a file shorter than the registers is a RangeError (not SIGBUS at the first access), leaving nothing behind', () => {
    const path = scratch.path('bar', 'short');
    writeFileSync(path, Buffer.alloc(128));
    const live = native.liveResources();
    const fds = fdCount();
    expect(() => new PciRegisters(path, 256)).toThrow(/128 bytes, fewer than the 256 bytes/);
    expect([native.liveResources(), fdCount(), mapsOf(path)]).toEqual([live, fds, 0]);
  });

  it('the native class checks bounds itself too (whatever calls it)', () => {
    const path = registerFile();
    const r = new native.Registers(path, 0, 16);
    try {
      expect(() => r.read32(16)).toThrow(RangeError);
      expect(() => r.read32(2)).toThrow(RangeError);
      expect(() => r.write32(14, 1)).toThrow(RangeError);
      r.write32(12, 0xfedcba98);
      expect([r.read32(12), u32At(path, 12)]).toEqual([0xfedcba98, 0xfedcba98]);
    } finally {
      r.close();
    }
    expect(() => r.read32(0)).toThrow(expect.objectContaining({ code: ErrorCodes.CLOSED }));
  });

  it('after close(): read32 and write32 throw ClosedError, close() is idempotent, the file is left as it was', () => {
    const path = registerFile();
    const r = regs(path, 256);
    r.write32(16, 77);
    r.close();
    expect(r.closed).toBe(true);
    for (const call of [() => r.read32(0), () => r.write32(0, 1), () => r.read32(3), () => r.write32(16, 2 ** 40)]) {
      const e = thrown(call);
      expect(e).toBeInstanceOf(ClosedError);
      expect(e).toMatchObject({ code: 'ERR_IVSHMEM_CLOSED', message: 'PciRegisters is closed' });
      expect(isSystemError(e)).toBe(false);
    }
    r.close();
    r.close();
    expect(r.closed).toBe(true);
    expect(mapsOf(path)).toBe(0);
    expect(u32At(path, 16)).toBe(77);
    expect(u32At(path, 0)).toBe(0);
  });

  it('[Symbol.dispose] closes it', () => {
    const path = registerFile();
    const live = native.liveResources();
    const r = new PciRegisters(path, 32);
    expect(native.liveResources()).toBe(live + 1);
    r.write32(4, 5);
    r[Symbol.dispose]();
    expect(r.closed).toBe(true);
    expect(() => r.read32(4)).toThrow(ClosedError);
    expect([native.liveResources(), mapsOf(path), u32At(path, 4)]).toEqual([live, 0, 5]);
    r[Symbol.dispose]();
  });

  it('1,000 open/write/read/close cycles leak no fd, no mapping and no native resource', async () => {
    const path = registerFile();
    const cycle = (i: number): void => {
      const r = new PciRegisters(path, 256, 256);
      r.write32((i % 64) * 4, i);
      if (r.read32((i % 64) * 4) !== i) throw new Error(`cycle ${i}: read back ${r.read32((i % 64) * 4)}`);
      r.close();
    };
    for (let i = 0; i < 20; i++) cycle(i);
    await turn();
    const before = { live: native.liveResources(), fds: fdCount(), maps: mapsOf(path) };
    expect(before.maps).toBe(0);
    for (let i = 0; i < 1000; i++) cycle(i);
    // And the failing constructions, as many.
    for (let i = 0; i < 1000; i++) expect(() => new PciRegisters(`${path}.none`, 256)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    await turn();
    expect({ live: native.liveResources(), fds: fdCount(), maps: mapsOf(path) }).toEqual(before);
    // What the last 64 cycles wrote is in the file, 256 bytes in.
    const bytes = readFileSync(path);
    for (let i = 936; i < 1000; i++) expect(bytes.readUInt32LE(256 + (i % 64) * 4)).toBe(i);
  });
});

describe('deviceRegisters / registersHandle (@internal)', () => {
  it('checks offsets and values before the handle sees them, and ClosedError (naming the owner) once closed', () => {
    const calls: string[] = [];
    const words = new Map<number, number>();
    const handle = {
      read32: (offset: number): number => {
        calls.push(`read ${offset}`);
        return words.get(offset) ?? 0;
      },
      write32: (offset: number, value: number): void => {
        calls.push(`write ${offset} ${value}`);
        words.set(offset, value);
      },
    };
    let closed = false;
    const r = deviceRegisters(handle, 16, 'Thing', () => closed);
    expect(r.size).toBe(16);
    expect(Object.isFrozen(r)).toBe(true);
    expect(registersHandle(r)).toBe(handle);
    r.write32(12, 0xffffffff);
    expect(r.read32(12)).toBe(0xffffffff);
    expect(() => r.read32(16)).toThrow(RangeError);
    expect(() => r.read32(2)).toThrow(RangeError);
    expect(() => r.write32(0, 2 ** 32)).toThrow(RangeError);
    expect(calls).toEqual(['write 12 4294967295', 'read 12']);
    closed = true;
    expect(() => r.read32(0)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CLOSED', message: 'Thing is closed' }));
    expect(calls).toHaveLength(2);
  });

  it('registersHandle of anything but a VfioDevice\'s or a PciRegisters is a TypeError', () => {
    const fake = { size: 256, read32: () => 0, write32: () => {} };
    expect(() => registersHandle(fake)).toThrow(TypeError);
    const path = registerFile();
    const r = regs(path, 16);
    expect(registersHandle(r)).toBeInstanceOf(native.Registers);
  });
});
