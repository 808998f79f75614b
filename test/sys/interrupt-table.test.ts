/**
 * The interrupt table (the one owner of the native table) and argument checks of the native
 * classes: received fds are adopted, not duplicated; failed edges take their bit back;
 * broadcasts report failures last; the counters' names come from the addon; bad arguments leave
 * nothing behind.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { openSync } from 'node:fs';
import { native } from '../../lib/sys/binding.js';
import { InterruptTable } from '../../lib/sys/interrupt-table.js';
import { headerLayout, writeHeader } from '../../lib/protocol/header.js';
import { EventFd, SharedMemory } from '../../lib/sys/index.js';
import { copyOf, saturate } from '../helpers/eventfds.js';
import { closeTracked, track } from '../helpers/network.js';
import { waitFor } from '../helpers/wait.js';
import { fdCount } from './helpers.js';

afterEach(closeTracked);

const ignore = (): void => {};

describe('InterruptTable', () => {
  function bitmaskTable(): { table: InterruptTable; pending: BigUint64Array; live: BigUint64Array } {
    const shm = track(SharedMemory.create({ size: 8192 }));
    const layout = headerLayout(64);
    writeHeader(shm.buffer, layout);
    const table = track(new InterruptTable({ self: 0, onInterrupt: ignore, bitmask: { memory: shm.buffer, layout } }));
    return {
      table,
      pending: new BigUint64Array(shm.buffer, layout.pendingOffset, 1),
      live: new BigUint64Array(shm.buffer, layout.liveOffset, 1),
    };
  }

  it('an edge whose eventfd write fails takes the bit back (no peer left suppressed forever)', () => {
    const { table, pending } = bitmaskTable();
    const full = track(saturate(new EventFd()));
    table.add(1, copyOf(full));
    const bits = table.pendingWords!;
    expect(() => bits.ring(1)).toThrow(expect.objectContaining({ code: 'EAGAIN', syscall: 'write' }));
    expect(pending[0]).toBe(0n);
    // Not suppressed by a stale bit: the next ring tries to signal again.
    expect(() => bits.ring(1)).toThrow(expect.objectContaining({ code: 'EAGAIN' }));
    expect(pending[0]).toBe(0n);
  });

  it('a broadcast signals every other edge before it reports a failed one, whose bit it clears', () => {
    const { table, pending, live } = bitmaskTable();
    const full = track(saturate(new EventFd()));
    const good = track(new EventFd());
    table.add(1, copyOf(full));
    table.add(2, copyOf(good));
    live[0] = 0b111n;
    expect(() => table.pendingWords!.broadcast()).toThrow(expect.objectContaining({ code: 'EAGAIN' }));
    expect(good.drain()).toBe(1);
    expect(pending[0]).toBe(0b100n);
  });

  it('adopts each fd it is given (no copy) and closes it when the peer leaves', () => {
    const { table } = bitmaskTable();
    const ev = track(new EventFd());
    const fds = [copyOf(ev), copyOf(ev)];
    const before = fdCount();
    expect(table.add(3, fds[0]!)).toBe(0);
    expect(table.add(3, fds[1]!)).toBe(1);
    expect(fdCount()).toBe(before);
    expect([table.vectorsOf(3), table.peers()]).toEqual([2, [{ id: 3, vectors: 2 }]]);
    table.remove(3);
    expect(fdCount()).toBe(before - 2);
    expect([table.vectorsOf(3), table.peers()]).toEqual([0, []]);
    for (const fd of fds) expect(() => native.dupFd(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it('an fd that is not an eventfd is refused, and closed', () => {
    const { table } = bitmaskTable();
    const notEventFd = openSync('/dev/null', 'r');
    expect(() => table.add(3, notEventFd)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'eventfd' }));
    expect(() => native.dupFd(notEventFd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(table.vectorsOf(3)).toBe(0);
  });

  it('a peer ID beyond 65535, or an add after close, is refused and the fd closed', () => {
    const { table } = bitmaskTable();
    const ev = track(new EventFd());
    const beyond = copyOf(ev);
    expect(() => table.add(65536, beyond)).toThrow(RangeError);
    expect(() => native.dupFd(beyond)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    table.close();
    const late = copyOf(ev);
    expect(() => table.add(1, late)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CLOSED' }));
    expect(() => native.dupFd(late)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it('closing closes every fd it holds, and then it knows no peer', () => {
    const { table } = bitmaskTable();
    const ev = track(new EventFd());
    const before = fdCount();
    table.add(0, copyOf(ev));
    table.add(5, copyOf(ev));
    expect(fdCount()).toBe(before + 2);
    table.close();
    expect(fdCount()).toBe(before);
    expect([table.vectorsOf(0), table.vectorsOf(5), table.peers()]).toEqual([0, 0, []]);
    expect(() => table.pendingWords!.ring(5)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CLOSED' }));
    table.close();
  });

  it('delivers the own vectors\' signals, drained first and counted', async () => {
    const got: [number, number][] = [];
    const table = track(new InterruptTable({ self: 4, onInterrupt: (vector, count) => got.push([vector, count]) }));
    expect(table.pendingWords).toBeNull();
    const ev0 = track(new EventFd());
    const ev1 = track(new EventFd());
    table.add(4, copyOf(ev0));
    table.add(4, copyOf(ev1));
    expect([table.vectorsOf(4), table.peers()]).toEqual([2, []]); // own vectors are not a peer
    ev1.signal(3);
    await waitFor(() => got.length > 0, 'the interrupt on vector 1');
    expect(got).toEqual([[1, 3]]);
    expect(ev1.drain()).toBe(0);
    expect(table.counters()).toMatchObject({ wakeups: 1, eventfdReads: 1, interrupts: 1, spurious: 0 });
    expect(table.signal(4, 0)).toBe(true); // ringing oneself
    await waitFor(() => got.length > 1, 'the interrupt on vector 0');
    expect(got).toEqual([[1, 3], [0, 1]]);
    expect(() => table.remove(4)).toThrow(RangeError);
  });

  it('its counters are the ones the addon names, each counted into its own place', () => {
    const { table } = bitmaskTable();
    expect(Object.keys(table.counters()).sort()).toEqual([...native.InterruptTable.counterNames].sort());
    const zero = Object.fromEntries(native.InterruptTable.counterNames.map((n) => [n, 0]));
    const ev = track(new EventFd());
    table.add(1, copyOf(ev));
    expect(table.signal(1, 0)).toBe(true);
    expect(table.counters()).toEqual({ ...zero, eventfdWrites: 1 });
    const bits = table.pendingWords!;
    expect([bits.ring(1), bits.ring(1)]).toEqual([true, false]);
    expect(bits.ack()).toBe(false); // the own bit (0) was never set
    expect(table.counters()).toEqual({ ...zero, eventfdWrites: 2, rings: 2, signals: 1, suppressed: 1, acks: 1 });
    table.resetCounters();
    expect(table.counters()).toEqual(zero);
    expect(table.signal(2, 0)).toBe(false); // nobody: no write, nothing counted
    expect(table.counters()).toEqual(zero);
  });
});

describe('native argument checks', () => {
  it('new Watcher(fd, notAFunction) throws a TypeError and leaves no libuv handle behind', () => {
    const before = native.liveResources();
    const e = track(new EventFd());
    const Watcher = native.Watcher as unknown as new (fd: unknown, cb: unknown) => unknown;
    expect(() => new Watcher(e.fd, 'not a function')).toThrow(TypeError);
    expect(native.liveResources()).toBe(before + 1); // only the eventfd
  });

  it('new Mapping(fd, notANumber) closes the fd it was given', () => {
    const fd = native.memfdCreate('review');
    const Mapping = native.Mapping as unknown as new (fd: number, size: unknown) => unknown;
    expect(() => new Mapping(fd, 'x')).toThrow();
    expect(() => native.dupFd(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});
