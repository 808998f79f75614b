/**
 * The interrupt table in doorbell mode (a guest's device): every signal is one 32-bit store of
 * `dest << 16 | vector` to the Doorbell register. The registers are a PciRegisters over a real
 * temporary file (a MAP_SHARED mapping, as of a sysfs resource0), so each store is read back from
 * the file. Peers get vectors from setVectors(); own eventfds only wake; with the bitmask, only
 * an edge rings the register; a closed register takes the bit back; a closed table writes nothing.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ClosedError, isSystemError } from '../../lib/index.js';
import { Bar0, doorbellValue } from '../../lib/protocol/pci.js';
import { headerLayout, writeHeader } from '../../lib/protocol/header.js';
import { native } from '../../lib/sys/binding.js';
import { dupFd } from '../../lib/sys/fd.js';
import { InterruptTable, type InterruptCounters } from '../../lib/sys/interrupt-table.js';
import { EventFd, PciRegisters, SharedMemory } from '../../lib/sys/index.js';
import { closeTracked, track } from '../helpers/network.js';
import { Scratch } from '../helpers/paths.js';
import { settle, waitFor } from '../helpers/wait.js';
import { fdCount, nodeChild, systemError, thrown } from './helpers.js';

const DOORBELL = Bar0.Doorbell; // 12
const SENTINEL = 0x5a5a5a5a;
const scratch = new Scratch();

afterEach(() => {
  closeTracked();
  scratch.cleanup();
});

const ignore = (): void => {};
const ZERO: InterruptCounters = { rings: 0, suppressed: 0, signals: 0, eventfdWrites: 0, doorbellWrites: 0, eventfdReads: 0, wakeups: 0, spurious: 0, interrupts: 0, acks: 0 };

/** BAR0 as a 256-byte file (in an 8 KiB one) mapped by a PciRegisters; the file's bytes read back with fs. */
function bar0(): { path: string; registers: PciRegisters; file: () => Buffer; doorbell: () => number } {
  const path = scratch.path('bar0', 'db');
  writeFileSync(path, Buffer.alloc(8192));
  const registers = track(new PciRegisters(path, 256));
  const file = (): Buffer => readFileSync(path);
  return { path, registers, file, doorbell: () => file().readUInt32LE(DOORBELL) };
}

/** The file but for the Doorbell register: must stay all zero. */
const otherBytesZero = (file: Buffer): boolean => Buffer.concat([file.subarray(0, DOORBELL), file.subarray(DOORBELL + 4)]).every((b) => b === 0);

function doorbellTable(self: number, registers: PciRegisters, onInterrupt: (vector: number, count: number) => void = ignore): InterruptTable {
  return track(new InterruptTable({ self, onInterrupt, doorbell: { registers, offset: DOORBELL } }));
}

describe('InterruptTable in doorbell mode', () => {
  it('signal(dest, vector) is one store of dest << 16 | vector at the Doorbell offset, counted as a doorbell write', () => {
    const { registers, file, doorbell } = bar0();
    const table = doorbellTable(1, registers);
    table.setVectors(3, 4);
    table.setVectors(0x8001, 2);
    table.setVectors(0xffff, 0xffff);
    expect([table.vectorsOf(3), table.vectorsOf(0x8001), table.vectorsOf(0xffff)]).toEqual([4, 2, 0xffff]);

    expect(table.signal(3, 2)).toBe(true);
    expect(doorbell()).toBe(0x00030002);
    expect(otherBytesZero(file())).toBe(true);
    expect(table.counters()).toEqual({ ...ZERO, doorbellWrites: 1 });

    // Unsigned for dest >= 0x8000: the same value doorbellValue() gives, read back as a u32.
    expect(table.signal(0x8001, 1)).toBe(true);
    expect(doorbell()).toBe(0x80010001);
    expect(doorbell()).toBe(doorbellValue(0x8001, 1));
    expect(registers.read32(DOORBELL)).toBe(0x80010001);
    expect(table.signal(0xffff, 0xfffe)).toBe(true);
    expect(doorbell()).toBe(0xfffffffe);
    expect(table.signal(3, 0)).toBe(true);
    expect(doorbell()).toBe(0x00030000);
    expect(otherBytesZero(file())).toBe(true);
    expect(table.counters()).toEqual({ ...ZERO, doorbellWrites: 4 });
  });

  it('a vector beyond the peer\'s count, or a peer without vectors, is false and writes nothing', () => {
    const { registers, file, doorbell } = bar0();
    const table = doorbellTable(1, registers);
    table.setVectors(3, 4);
    registers.write32(DOORBELL, SENTINEL);
    expect(table.signal(3, 4)).toBe(false);
    expect(table.signal(3, 0xffff)).toBe(false);
    expect(table.signal(4, 0)).toBe(false); // unknown
    expect(table.signal(1, 0)).toBe(false); // the own ID, no vectors yet
    expect(table.signal(70000, 0)).toBe(false); // not a peer ID at all
    expect(doorbell()).toBe(SENTINEL);
    expect(otherBytesZero(file())).toBe(true);
    expect(table.counters()).toEqual(ZERO);
  });

  it('the own ID with vectors from setVectors rings through the Doorbell too, and is no peer', () => {
    const { registers, doorbell } = bar0();
    const got: unknown[] = [];
    const table = doorbellTable(5, registers, (v, c) => got.push([v, c]));
    table.setVectors(5, 2);
    expect([table.vectorsOf(5), table.peers()]).toEqual([2, []]);
    expect(table.signal(5, 1)).toBe(true);
    expect(doorbell()).toBe(0x00050001);
    expect(table.signal(5, 2)).toBe(false);
    expect(table.counters()).toEqual({ ...ZERO, doorbellWrites: 1 });
    expect(got).toEqual([]);
    // Own vectors given by setVectors cannot then become eventfds: the fd is refused and closed.
    const ev = track(new EventFd());
    const fd = dupFd(ev.fd);
    expect(() => table.add(5, fd)).toThrow(/doorbell mode/);
    expect(() => native.dupFd(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(table.vectorsOf(5)).toBe(2);
    // And they go away with setVectors(self, 0).
    table.setVectors(5, 0);
    expect(table.signal(5, 0)).toBe(false);
    expect(() => table.remove(5)).toThrow(RangeError);
  });

  it('own eventfds (add) are watched for wakeups, yet signal(self, v) goes to the Doorbell register, not to them', async () => {
    const { registers, doorbell } = bar0();
    const got: [number, number][] = [];
    const table = doorbellTable(2, registers, (v, c) => got.push([v, c]));
    const ev0 = track(new EventFd());
    const ev1 = track(new EventFd());
    const fds = fdCount();
    expect(table.add(2, dupFd(ev0.fd))).toBe(0);
    expect(table.add(2, dupFd(ev1.fd))).toBe(1);
    expect(fdCount()).toBe(fds + 2); // adopted, no copies
    expect([table.vectorsOf(2), table.peers()]).toEqual([2, []]);

    expect(table.signal(2, 1)).toBe(true);
    expect(doorbell()).toBe(0x00020001);
    expect(table.signal(2, 2)).toBe(false);
    await settle();
    expect(got).toEqual([]); // the store went to the register: no eventfd was written
    expect(ev1.drain()).toBe(0);
    expect(table.counters()).toEqual({ ...ZERO, doorbellWrites: 1 });

    // What the device does: its MSI-X vector 1 writes the eventfd; the table wakes and delivers.
    ev1.signal(5);
    await waitFor(() => got.length > 0, 'the interrupt on own vector 1');
    expect(got).toEqual([[1, 5]]);
    expect(table.counters()).toMatchObject({ doorbellWrites: 1, eventfdWrites: 0, wakeups: 1, interrupts: 1 });
    ev0.signal(1);
    await waitFor(() => got.length > 1, 'the interrupt on own vector 0');
    expect(got).toEqual([[1, 5], [0, 1]]);

    // Own vectors that are eventfds are not for setVectors.
    expect(() => table.setVectors(2, 4)).toThrow(/eventfds/);
    expect(table.vectorsOf(2)).toBe(2);
    table.close();
    expect(fdCount()).toBe(fds);
  });

  it('add(otherPeer, fd) is refused in doorbell mode, and the fd closed', () => {
    const { registers } = bar0();
    const table = doorbellTable(1, registers);
    const ev = track(new EventFd());
    const fds = fdCount();
    for (const peer of [0, 2, 0x8000]) {
      const fd = dupFd(ev.fd);
      expect(fdCount()).toBe(fds + 1);
      const e = thrown(() => table.add(peer, fd));
      expect(e).toBeInstanceOf(Error);
      expect(String((e as Error).message)).toMatch(/doorbell mode only the own vectors are eventfds/);
      expect(() => native.dupFd(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
      expect(fdCount()).toBe(fds);
      expect(table.vectorsOf(peer)).toBe(0);
    }
    expect(table.peers()).toEqual([]);
    // A peer with vectors from setVectors cannot take eventfds either.
    table.setVectors(2, 1);
    const fd = dupFd(ev.fd);
    expect(() => table.add(2, fd)).toThrow(/doorbell mode/);
    expect(fdCount()).toBe(fds);
    expect(table.peers()).toEqual([{ id: 2, vectors: 1 }]);
  });

  it('setVectors on a table without doorbell mode throws, and sets nothing', () => {
    const table = track(new InterruptTable({ self: 0, onInterrupt: ignore }));
    expect(() => table.setVectors(1, 1)).toThrow(/doorbell mode only/);
    expect([table.vectorsOf(1), table.peers(), table.signal(1, 0)]).toEqual([0, [], false]);
    table.close();
    expect(() => table.setVectors(1, 1)).toThrow(ClosedError);
  });

  it('setVectors checks its arguments, and throws ClosedError once the table is closed', () => {
    const { registers } = bar0();
    const table = doorbellTable(0, registers);
    expect(() => table.setVectors(65536, 1)).toThrow(RangeError);
    expect(() => table.setVectors(-1, 1)).toThrow(RangeError);
    expect(() => table.setVectors(1, 65536)).toThrow(RangeError);
    expect(() => table.setVectors(1, 1.5)).toThrow(RangeError);
    expect(table.peers()).toEqual([]);
    table.close();
    expect(() => table.setVectors(1, 1)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CLOSED' }));
  });

  it('peers() lists setVectors peers in the order they got vectors; setVectors(p, 0) and remove(p) take them out', () => {
    const { registers, doorbell } = bar0();
    const table = doorbellTable(0, registers);
    table.setVectors(5, 1);
    table.setVectors(2, 3);
    table.setVectors(9, 1);
    table.setVectors(0, 1); // the own ID: never a peer
    expect(table.peers()).toEqual([
      { id: 5, vectors: 1 },
      { id: 2, vectors: 3 },
      { id: 9, vectors: 1 },
    ]);
    table.setVectors(5, 2); // a new count keeps its place
    expect(table.peers().map((p) => [p.id, p.vectors])).toEqual([[5, 2], [2, 3], [9, 1]]);
    table.setVectors(2, 0);
    expect(table.peers().map((p) => p.id)).toEqual([5, 9]);
    expect([table.vectorsOf(2), table.signal(2, 0)]).toEqual([0, false]);
    table.setVectors(2, 0); // not listed: nothing
    table.remove(5);
    expect(table.peers()).toEqual([{ id: 9, vectors: 1 }]);
    expect([table.vectorsOf(5), table.signal(5, 0)]).toEqual([0, false]);
    table.remove(5); // gone already: nothing
    table.setVectors(2, 1); // back at the end
    expect(table.peers().map((p) => p.id)).toEqual([9, 2]);
    registers.write32(DOORBELL, SENTINEL);
    expect(table.signal(9, 0)).toBe(true);
    expect(doorbell()).toBe(0x00090000);
    expect(table.counters().doorbellWrites).toBe(1);
  });

  it('the doorbell offset must be an aligned register, the registers a PciRegisters (or VfioDevice\'s) that is open; nothing is left behind', () => {
    const { registers } = bar0();
    const live = native.liveResources();
    const make = (doorbell: { registers: unknown; offset: number }): unknown =>
      thrown(() => new InterruptTable({ self: 0, onInterrupt: ignore, doorbell: doorbell as never }));
    expect(make({ registers, offset: 13 })).toBeInstanceOf(RangeError);
    expect(make({ registers, offset: 256 })).toBeInstanceOf(RangeError);
    expect(make({ registers: { size: 256, read32: () => 0, write32: () => {} }, offset: 12 })).toBeInstanceOf(TypeError);
    expect(native.liveResources()).toBe(live);
    const closedOne = bar0().registers;
    closedOne.close();
    const live2 = native.liveResources();
    const e = make({ registers: closedOne, offset: 12 });
    expect(e).toBeInstanceOf(TypeError);
    expect(String((e as Error).message)).toMatch(/open/);
    expect(native.liveResources()).toBe(live2);
  });

  it('closing the PciRegisters unmaps them even while the table holds a share: signal() then throws EBADF', () => {
    const { registers, path, doorbell } = bar0();
    const table = doorbellTable(0, registers);
    table.setVectors(1, 1);
    expect(table.signal(1, 0)).toBe(true);
    registers.close();
    expect(readFileSync('/proc/self/maps', 'utf8')).not.toContain(path);
    registers.close();
    const e = systemError(() => table.signal(1, 0));
    expect(e).toMatchObject({ code: 'EBADF', syscall: 'pwrite' });
    expect(e.message).toContain(path);
    expect(table.signal(2, 0)).toBe(false); // nobody to ring: no store attempted
    expect(doorbell()).toBe(0x00010000);
    expect(table.counters().doorbellWrites).toBe(1);
  });

  it('after table.close() nothing writes, and the registers stay the owner\'s', () => {
    const { registers, file, doorbell } = bar0();
    const live = native.liveResources();
    const table = doorbellTable(0, registers);
    table.setVectors(1, 1);
    table.setVectors(0, 1);
    registers.write32(DOORBELL, SENTINEL);
    table.close();
    expect(native.liveResources()).toBe(live);
    expect(() => table.signal(1, 0)).toThrow(ClosedError);
    expect(() => table.signal(0, 0)).toThrow(ClosedError);
    expect([table.vectorsOf(0), table.vectorsOf(1), table.peers()]).toEqual([0, 0, []]);
    table.close();
    expect(doorbell()).toBe(SENTINEL);
    expect(otherBytesZero(file())).toBe(true);
    // The table gave up its share only: the PciRegisters still works.
    registers.write32(0, 1);
    expect([registers.read32(0), file().readUInt32LE(0)]).toEqual([1, 1]);
  });
});

describe('doorbell mode with the bitmask header', () => {
  function bitmaskDoorbell(self = 0) {
    const regs = bar0();
    const shm = track(SharedMemory.create({ size: 8192 }));
    const layout = headerLayout(64);
    writeHeader(shm.buffer, layout);
    const table = track(
      new InterruptTable({ self, onInterrupt: ignore, doorbell: { registers: regs.registers, offset: DOORBELL }, bitmask: { memory: shm.buffer, layout } }),
    );
    const pending = new BigUint64Array(shm.buffer, layout.pendingOffset, 1);
    return { ...regs, shm, table, bits: table.pendingWords!, pending };
  }

  it('a ring on a clear bit is exactly one Doorbell write (vector 0); on a set bit none, counted as suppressed', () => {
    const { table, bits, pending, registers, doorbell, file } = bitmaskDoorbell();
    table.setVectors(1, 3);
    table.setVectors(40, 1);
    expect(bits.ring(1)).toBe(true);
    expect(doorbell()).toBe(0x00010000);
    expect(pending[0]).toBe(1n << 1n);
    expect(table.counters()).toEqual({ ...ZERO, rings: 1, signals: 1, doorbellWrites: 1 });

    registers.write32(DOORBELL, SENTINEL);
    expect(bits.ring(1)).toBe(false);
    expect(doorbell()).toBe(SENTINEL);
    expect(table.counters()).toEqual({ ...ZERO, rings: 2, signals: 1, suppressed: 1, doorbellWrites: 1 });

    // A bit in the upper half of the 64-bit word.
    expect(bits.ring(40)).toBe(true);
    expect(doorbell()).toBe(0x00280000);
    expect(pending[0]).toBe((1n << 1n) | (1n << 40n));
    expect(table.counters().doorbellWrites).toBe(2);
    expect(otherBytesZero(file())).toBe(true);
  });

  it('10,000 rings with the bit set make no Doorbell write at all', () => {
    const { table, bits, pending, registers, doorbell } = bitmaskDoorbell();
    table.setVectors(3, 1);
    expect(bits.ring(3)).toBe(true);
    registers.write32(DOORBELL, SENTINEL);
    table.resetCounters();
    let edges = 0;
    for (let i = 0; i < 10_000; i++) if (bits.ring(3)) edges++;
    expect(edges).toBe(0);
    expect(doorbell()).toBe(SENTINEL);
    expect(table.counters()).toEqual({ ...ZERO, rings: 10_000, suppressed: 10_000 });
    // Once the receiver clears it, the next ring is an edge again.
    pending[0] = 0n;
    expect(bits.ring(3)).toBe(true);
    expect(doorbell()).toBe(0x00030000);
    expect(table.counters()).toMatchObject({ doorbellWrites: 1, signals: 1, suppressed: 10_000 });
  });

  it('a ring to a peer without vectors throws and leaves its bit clear; broadcast rings the live ones', () => {
    const { table, bits, pending, doorbell, registers } = bitmaskDoorbell();
    registers.write32(DOORBELL, SENTINEL);
    expect(() => bits.ring(7)).toThrow(RangeError);
    expect(pending[0]).toBe(0n);
    expect(doorbell()).toBe(SENTINEL);
    table.setVectors(7, 1);
    expect(bits.ring(7)).toBe(true);
    expect(doorbell()).toBe(0x00070000);
  });

  it('broadcast: one Doorbell write per live peer with vectors whose bit was clear (lowest ID first), none for the rest', () => {
    const { table, bits, pending, doorbell, shm } = bitmaskDoorbell(0);
    const layout = headerLayout(64);
    const live = new BigUint64Array(shm.buffer, layout.liveOffset, 1);
    table.setVectors(0, 1); // the own bit is never broadcast to
    table.setVectors(1, 1);
    table.setVectors(3, 1);
    table.setVectors(9, 1);
    live[0] = 0b1000001111n; // 0, 1, 2 (no vectors), 3, 9
    pending[0] = 1n << 9n; // 9 is pending already
    table.resetCounters();
    expect(bits.broadcast()).toBe(2);
    expect(doorbell()).toBe(0x00030000); // 1 first, then 3
    expect(pending[0]).toBe(0b1000001010n);
    expect(table.counters()).toEqual({ ...ZERO, rings: 3, signals: 2, suppressed: 1, doorbellWrites: 2 });
  });

  it('with the PciRegisters closed, signal() is EBADF and a ring takes its bit back', () => {
    const { table, bits, pending, registers, doorbell } = bitmaskDoorbell();
    table.setVectors(1, 1);
    registers.write32(DOORBELL, SENTINEL);
    registers.close();
    expect(systemError(() => table.signal(1, 0))).toMatchObject({ code: 'EBADF', syscall: 'pwrite' });
    const e = thrown(() => bits.ring(1));
    expect(isSystemError(e)).toBe(true);
    expect(e).toMatchObject({ code: 'EBADF' });
    expect(pending[0]).toBe(0n);
    // Not suppressed by a stale bit: the next ring tries (and fails) again.
    expect(() => bits.ring(1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(pending[0]).toBe(0n);
    expect(table.counters()).toMatchObject({ doorbellWrites: 0, signals: 2, suppressed: 0 });
    expect(doorbell()).toBe(SENTINEL);
  });

  it('after table.close() a ring throws ClosedError, sets no bit and writes nothing', () => {
    const { table, bits, pending, registers, doorbell } = bitmaskDoorbell();
    table.setVectors(1, 1);
    registers.write32(DOORBELL, SENTINEL);
    table.close();
    expect(() => bits.ring(1)).toThrow(ClosedError);
    expect(() => bits.broadcast()).toThrow(ClosedError);
    expect(pending[0]).toBe(0n);
    expect(doorbell()).toBe(SENTINEL);
  });
});

describe('doorbell mode: the table keeps its registers', () => {
  it('registers nothing else refers to are not unmapped by gc() under the table', async () => {
    const child = nodeChild('doorbell-gc.mjs', [], { nodeArgs: ['--expose-gc'] });
    expect(await child.next('result')).toEqual({ type: 'result', signalled: true, word: (3 << 16) >>> 0 });
    expect(await child.exit()).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
  });
});
