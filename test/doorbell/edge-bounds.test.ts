/**
 * A ring stays inside the pending words: a peer past the bit words is refused before any bit is
 * touched (an undo used to clear a bit in whatever followed them), and a peer whose eventfds are
 * gone is refused before its bit is set.
 */
import { describe, expect, it } from 'vitest';
import { headerLayout, writeHeader } from '../../lib/protocol/header.js';
import { InterruptTable } from '../../lib/sys/interrupt-table.js';
import { BitmaskDoorbell } from '../../lib/index.js';
import { EventFd, SharedMemory } from '../../lib/sys/index.js';
import { copyOf, saturate } from '../helpers/eventfds.js';
import { waitFor } from '../helpers/wait.js';
import { pendingBit, useResources } from './helpers.js';

const res = useResources();

describe('the pending words\' ring(dest)', () => {
  /** A table over one 64-bit pending word at 64, with all-ones canaries right before and after it. */
  function fenced(): { table: InterruptTable; before: BigUint64Array; pending: BigUint64Array; after: BigUint64Array } {
    const shm = res.track(SharedMemory.create({ size: 8192 }));
    const layout = headerLayout(64);
    writeHeader(shm.buffer, layout);
    const table = res.track(new InterruptTable({ self: 0, onInterrupt: () => {}, bitmask: { memory: shm.buffer, layout } }));
    const before = new BigUint64Array(shm.buffer, layout.pendingOffset - 8, 1);
    const pending = new BigUint64Array(shm.buffer, layout.pendingOffset, 1);
    const after = new BigUint64Array(shm.buffer, layout.pendingOffset + 8, 1);
    before[0] = after[0] = 0xffff_ffff_ffff_ffffn;
    return { table, before, pending, after };
  }

  it('a peer past the bit words is refused: not signalled, nothing counted', () => {
    const { table, before, pending, after } = fenced();
    const ev = res.track(new EventFd());
    table.add(64, copyOf(ev)); // an ID the header has no bit for
    expect(() => table.pendingWords!.ring(64)).toThrow(RangeError);
    expect(ev.drain()).toBe(0);
    expect(table.counters()).toMatchObject({ rings: 0, signals: 0, eventfdWrites: 0 });
    expect([before[0], pending[0], after[0]]).toEqual([0xffff_ffff_ffff_ffffn, 0n, 0xffff_ffff_ffff_ffffn]);
  });

  it('nor can a failing signal for such a peer clear a bit outside the pending words', () => {
    const { table, before, pending, after } = fenced();
    const full = res.track(saturate(new EventFd())); // write(2) on it fails with EAGAIN
    table.add(64, copyOf(full));
    table.add(65, copyOf(full));
    const ring = (dest: number): unknown => {
      try {
        return table.pendingWords!.ring(dest);
      } catch (error) {
        return (error as Error).name;
      }
    };
    const results = [ring(64), ring(65)];
    expect({ results, words: [before[0], pending[0], after[0]] }).toEqual({
      results: ['RangeError', 'RangeError'],
      words: [0xffff_ffff_ffff_ffffn, 0n, 0xffff_ffff_ffff_ffffn],
    });
    expect(table.counters()).toMatchObject({ rings: 0, signals: 0, eventfdWrites: 0 });
  });
});

describe('BitmaskDoorbell.ring', () => {
  it('a peer whose eventfds are gone (rung from a peer-left listener) is refused, its bit left clear', async () => {
    const server = res.listen('edge-undo', { bitmask: true, size: 1 << 16 });
    const a = await res.connect(server, { bitmask: true });
    const b = await res.connect(server, { bitmask: true });
    await a.waitForPeer(b.id);
    // When the listener runs, the peer's eventfds are closed already: the table, the one record
    // of who can be rung, no longer lists it.
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
