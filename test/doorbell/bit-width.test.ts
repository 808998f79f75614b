/**
 * One width for the pending bits: the interrupt table's pending words (ring, broadcast, ack,
 * claim: Atomics on an Int32Array) and the server's BitWords all work on 32-bit words. They agree bit for bit on
 * the header's layout (bit id of 32-bit word id / 32 is bit id of 64-bit word id / 64 on
 * little-endian), touch nothing outside the pending words, and — seen by a hardware
 * watchpoint — no operation on a bit touches the other half of its 64-bit word.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BitWords, headerLayout, writeHeader } from '../../lib/protocol/header.js';
import { InterruptTable } from '../../lib/sys/interrupt-table.js';
import { EventFd, SharedMemory } from '../../lib/sys/index.js';
import { copyOf } from '../helpers/eventfds.js';
import { JsonChild } from '../helpers/children.js';
import { findOnPath, isCi } from '../helpers/env.js';
import { waitFor } from '../helpers/wait.js';
import { useResources } from './helpers.js';

const res = useResources();

describe('the pending words', () => {
  it('the table, the server and a 32-bit view agree on bits 0..127, and nothing outside the pending words changes', () => {
    const shm = res.track(SharedMemory.create({ size: 8192 }));
    const layout = headerLayout(128);
    writeHeader(shm.buffer, layout);
    expect(layout).toMatchObject({ words: 2, pendingOffset: 64, liveOffset: 128 });
    const table = (self: number): InterruptTable =>
      res.track(new InterruptTable({ self, onInterrupt: () => {}, bitmask: { memory: shm.buffer, layout } }));
    const pendingEnd = layout.pendingOffset + layout.words * 8;
    const bytes = new Uint8Array(shm.buffer, 0, layout.dataOffset);
    // Canaries in the reserved bytes before the pending words and in the gap after them.
    bytes.fill(0xa5, 32, layout.pendingOffset);
    bytes.fill(0xa5, pendingEnd, layout.liveOffset);
    const p32 = new Int32Array(shm.buffer, layout.pendingOffset, layout.words * 2);
    const pending = new BitWords(shm.buffer, layout.pendingOffset, layout.words);
    const live = new BitWords(shm.buffer, layout.liveOffset, layout.words);
    for (let id = 0; id < 128; id++) live.set(id);
    const outside = (): number[] => [...bytes.subarray(0, layout.pendingOffset), ...bytes.subarray(pendingEnd)];
    const before = outside();
    const only = (id: number): number[] => [0, 1, 2, 3].map((w) => (w === id >> 5 ? 1 << (id & 31) : 0));

    for (let id = 0; id < 128; id++) {
      const owner = table(id);
      const own = owner.pendingWords!;
      Atomics.or(p32, id >> 5, 1 << (id & 31)); // another party's edge, on a 32-bit view
      expect([own.pending(), pending.has(id), pending.ids()]).toEqual([true, true, [id]]);
      expect(own.ack()).toBe(true);
      expect([...p32]).toEqual([0, 0, 0, 0]);
      expect(own.claim()).toBe(false);
      expect([...p32]).toEqual(only(id));
      pending.clear(id);
      expect(own.pending()).toBe(false);
      pending.set(id);
      expect([...p32]).toEqual(only(id));
      expect(own.ack()).toBe(true);
      owner.close();
    }

    const senderTable = table(0);
    const sender = senderTable.pendingWords!;
    const ev = res.track(new EventFd());
    for (let id = 1; id < 128; id++) senderTable.add(id, copyOf(ev));
    for (let id = 1; id < 128; id++) {
      expect(sender.ring(id)).toBe(true);
      expect([...p32]).toEqual(only(id));
      expect(sender.ring(id)).toBe(false);
      pending.clear(id);
    }
    expect(ev.drain()).toBe(127);
    expect(sender.broadcast()).toBe(127);
    expect([...p32]).toEqual([~1, -1, -1, -1]);
    expect(pending.ids()).toEqual(Array.from({ length: 127 }, (_, i) => i + 1));
    expect(sender.broadcast()).toBe(0);
    expect(ev.drain()).toBe(127);
    expect(outside()).toEqual(before);
  });
});

// Hardware watchpoints through perf (perf_event breakpoints): available on most Linux hosts
// and VMs; where they are not, this one test cannot look.
const perf = findOnPath('perf');
const watchpoints =
  perf !== null && /^0,,mem:0x1000/m.test(spawnSync(perf, ['stat', '-x', ',', '-e', 'mem:0x1000/4:rw:u', 'true'], { encoding: 'utf8', timeout: 20_000 }).stderr ?? '');
if (!watchpoints) {
  // .ci/run installs linux-perf; CI's machines have the breakpoints, so there it must run.
  if (isCi()) throw new Error('perf with hardware breakpoints (mem: events) must be usable in CI: apt-get install -y linux-perf');
  console.log('[bit-width] perf with hardware breakpoints (mem: events) is not usable here: the watchpoint test is skipped (apt-get install -y linux-perf)');
}

describe('access width, seen by a hardware watchpoint', () => {
  it.skipIf(!watchpoints)('no operation of the table or the server on bits 1..3 touches bits 32..63 of the same 64-bit word', async () => {
    const worker = JsonChild.fixture('doorbell/bit-width.mjs', {}, 'bit-width');
    const ready = await worker.next('ready');
    const upper = String(ready.upper);
    const lower = String(ready.lower);
    const watch = new JsonChild(perf!, ['stat', '-I', '100', '-x', ',', '-e', `mem:${lower}/4:rw:u,mem:${upper}/4:rw:u`, '-p', String(ready.pid)], {
      name: 'perf stat',
    });
    // perf -I prints "time,count,unit,event,..." per event per interval, on stderr.
    const counts = (): { intervals: number; lower: number; upper: number } => {
      let intervals = 0;
      let low = 0;
      let up = 0;
      for (const line of watch.stderr.split('\n')) {
        const [, count, , event] = line.split(',');
        const n = Number(count);
        if (event === undefined || !Number.isFinite(n)) continue;
        if (event.includes(lower)) {
          low += n;
          if (n > 0) intervals++;
        } else if (event.includes(upper)) {
          up += n;
        }
      }
      return { intervals, lower: low, upper: up };
    };
    await waitFor(() => counts().intervals >= 5, () => `5 intervals of perf counts of the watched word (perf said: ${watch.stderr.slice(-500)})`);
    watch.signal('SIGINT');
    await watch.exit();
    worker.proc.stdin?.end();
    expect(await worker.exit()).toEqual({ code: 0, signal: null });
    const seen = counts();
    expect(seen.lower).toBeGreaterThan(10_000); // the watchpoint saw the operations
    expect(seen.upper).toBe(0);
  });
});
