/** The native doorbell table and argument checks of the native classes: failed edges take their bit back, broadcasts report failures last, bad arguments leave nothing behind. */
import { afterEach, describe, expect, it } from 'vitest';
import { closeSync, openSync } from 'node:fs';
import { native } from '../../lib/sys/binding.js';
import { nativeMappingOf } from '../../lib/sys/shared-memory.js';
import { headerLayout, writeHeader } from '../../lib/protocol/header.js';
import { EventFd, SharedMemory } from '../../lib/index.js';
import { closeTracked, track } from '../helpers/network.js';

afterEach(closeTracked);

describe('native doorbell', () => {
  function bitmaskDoorbell(): { doorbell: ReturnType<typeof makeDoorbell>; pending: BigUint64Array; live: BigUint64Array } {
    const shm = track(SharedMemory.create({ size: 8192 }));
    const layout = headerLayout(64);
    writeHeader(shm.buffer, layout);
    const doorbell = makeDoorbell(shm, layout);
    return {
      doorbell,
      pending: new BigUint64Array(shm.buffer, layout.pendingOffset, 1),
      live: new BigUint64Array(shm.buffer, layout.liveOffset, 1),
    };
  }
  function makeDoorbell(shm: SharedMemory, layout: ReturnType<typeof headerLayout>) {
    return track(new native.Doorbell(nativeMappingOf(shm), { self: 0, words: 1, pendingOffset: layout.pendingOffset, liveOffset: layout.liveOffset }));
  }

  it('an edge whose eventfd write fails takes the bit back (no peer left suppressed forever)', () => {
    const { doorbell, pending } = bitmaskDoorbell();
    const readOnly = openSync('/dev/null', 'r'); // write(2) on it fails with EBADF
    try {
      doorbell.setPeer(1, [readOnly]);
    } finally {
      closeSync(readOnly);
    }
    expect(() => doorbell.ring(1)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'write' }));
    expect(pending[0]).toBe(0n);
    expect(() => doorbell.edge(1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(pending[0]).toBe(0n);
  });

  it('a broadcast signals every other edge before it reports a failed one, whose bit it clears', () => {
    const { doorbell, pending, live } = bitmaskDoorbell();
    const readOnly = openSync('/dev/null', 'r');
    const good = track(new EventFd());
    try {
      doorbell.setPeer(1, [readOnly]);
      doorbell.setPeer(2, [good.fd]);
    } finally {
      closeSync(readOnly);
    }
    live[0] = 0b111n;
    expect(() => doorbell.broadcast()).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(good.drain()).toBe(1);
    expect(pending[0]).toBe(0b100n);
  });

  it('setPeer with no eventfd is a RangeError', () => {
    const { doorbell } = bitmaskDoorbell();
    expect(() => doorbell.setPeer(3, [])).toThrow(RangeError);
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
