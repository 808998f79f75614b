/**
 * The edge half of a ring stays inside the pending words: the native `edge(dest)` refuses a
 * peer past the bit words (its undo used to clear a bit in whatever followed them), and a 0->1
 * edge that JS made for a peer the native side cannot signal is taken back.
 */
import { closeSync, openSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { native, UNKNOWN_PEER } from '../../lib/sys/binding.js';
import { headerLayout, writeHeader } from '../../lib/protocol/header.js';
import { nativeMappingOf } from '../../lib/sys/shared-memory.js';
import { BitmaskDoorbell, EventFd, SharedMemory } from '../../lib/index.js';
import { waitFor } from '../helpers/wait.js';
import { pendingBit, useResources } from './helpers.js';

const res = useResources();

describe('native edge(dest)', () => {
  /** A doorbell over one 64-bit pending word at 64, with all-ones canaries right before and after it. */
  function fenced(): { doorbell: ReturnType<typeof makeDoorbell>; before: BigUint64Array; pending: BigUint64Array; after: BigUint64Array } {
    const shm = res.track(SharedMemory.create({ size: 8192 }));
    const layout = headerLayout(64);
    writeHeader(shm.buffer, layout);
    const doorbell = res.track(makeDoorbell(shm, layout));
    const before = new BigUint64Array(shm.buffer, layout.pendingOffset - 8, 1);
    const pending = new BigUint64Array(shm.buffer, layout.pendingOffset, 1);
    const after = new BigUint64Array(shm.buffer, layout.pendingOffset + 8, 1);
    before[0] = after[0] = 0xffff_ffff_ffff_ffffn;
    return { doorbell, before, pending, after };
  }
  function makeDoorbell(shm: SharedMemory, layout: ReturnType<typeof headerLayout>) {
    return new native.Doorbell(nativeMappingOf(shm), { self: 0, words: layout.words, pendingOffset: layout.pendingOffset, liveOffset: layout.liveOffset });
  }

  it('a peer past the bit words is an unknown peer: not signalled, nothing counted', () => {
    const { doorbell, before, pending, after } = fenced();
    const ev = res.track(new EventFd());
    doorbell.setPeer(64, [ev.fd]); // an ID the header has no bit for
    expect(doorbell.edge(64)).toBe(UNKNOWN_PEER);
    expect(ev.drain()).toBe(0);
    expect(doorbell.counters()).toMatchObject({ rings: 0, signals: 0, eventfdWrites: 0 });
    expect([before[0], pending[0], after[0]]).toEqual([0xffff_ffff_ffff_ffffn, 0n, 0xffff_ffff_ffff_ffffn]);
  });

  it("a failed signal's undo for such a peer cannot clear a bit outside the pending words", () => {
    const { doorbell, before, pending, after } = fenced();
    const readOnly = openSync('/dev/null', 'r'); // write(2) on it fails with EBADF
    try {
      doorbell.setPeer(64, [readOnly]);
      doorbell.setPeer(65, [readOnly]);
    } finally {
      closeSync(readOnly);
    }
    const edge = (dest: number): unknown => {
      try {
        return doorbell.edge(dest);
      } catch (error) {
        return (error as { code?: string }).code;
      }
    };
    const results = [edge(64), edge(65)];
    expect({ results, words: [before[0], pending[0], after[0]] }).toEqual({
      results: [UNKNOWN_PEER, UNKNOWN_PEER],
      words: [0xffff_ffff_ffff_ffffn, 0n, 0xffff_ffff_ffff_ffffn],
    });
  });
});

describe('BitmaskDoorbell.ring', () => {
  it('a 0->1 edge made in JS for a peer the native side no longer signals is taken back', async () => {
    const server = res.listen('edge-undo', { bitmask: true, size: 1 << 16 });
    const a = await res.connect(server, { bitmask: true });
    const b = await res.connect(server, { bitmask: true });
    await a.waitForPeer(b.id);
    // Registered before the doorbell's own listener: when it runs, the peer's eventfds are gone
    // (removed natively) but the doorbell still counts it as known.
    const errors: unknown[] = [];
    a.on('peer-left', (id) => {
      try {
        bell.ring(id);
      } catch (error) {
        errors.push(error);
      }
    });
    const bell = res.track(new BitmaskDoorbell(a));
    const gone = b.id;
    b.close();
    await waitFor(() => errors.length > 0, `a's ring of the departed peer ${gone}`);
    expect(errors[0]).toBeInstanceOf(RangeError);
    expect(pendingBit(a.shm.buffer, a.header, gone)).toBe(false);
    expect(a.counters()).toMatchObject({ signals: 0, eventfdWrites: 0 });
  });
});
