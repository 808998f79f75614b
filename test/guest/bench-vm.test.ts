/**
 * `ivshmem bench --vm` end to end, one boot: the VM part of the bench with few messages per cell.
 * Its counting is checked where the number is known: in the sparse ping-pong of the qemu design
 * every pong is one Doorbell write and every ping one MSI-X interrupt; in the qemu stream to the
 * host every message is one Doorbell write. QEMU's trace and the guest kernel must give exactly
 * those numbers, and the models must agree with them on every cell.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBenchCli } from '../../bench/cli.js';
import { vmCells } from '../../bench/vm/run-vm.js';
import { resolveOptions } from '../../bench/options.js';
import type { BenchReport, VmCellResult } from '../../bench/types.js';
import { killAllChildren } from '../helpers/children.js';
import { guestUnavailable } from '../helpers/guest.js';
import { makeTempDir, removeDir, requireBuilt } from '../helpers/paths.js';

const why = guestUnavailable();
if (why !== null) console.warn(why);

const MESSAGES = 200;
let dir: string;
let report: BenchReport;
let stdout = '';

beforeAll(async () => {
  if (why !== null) return;
  requireBuilt('dist/bench/vm/guest-agent.js');
  dir = makeTempDir('bench-vm');
  const out = { write: (t: string) => (stdout += t) };
  const outcome = await runBenchCli({
    vm: 'only',
    quick: true,
    messages: MESSAGES,
    timeoutMs: 30_000,
    json: join(dir, 'vm.json'),
    svg: join(dir, 'vm.svg'),
    quiet: true,
    stdout: out,
    stderr: out,
  });
  report = outcome.report;
}, 240_000);

afterAll(async () => {
  if (dir !== undefined) removeDir(dir);
  await killAllChildren();
});

const cell = (workload: string, design: string, busyPoll = 'none'): VmCellResult => {
  const c = report.vm!.cells.find((x) => x.workload === workload && x.design === design && x.busyPoll === busyPoll);
  if (c === undefined) throw new Error(`no VM cell ${workload}/${design}/${busyPoll}`);
  return c;
};

describe.skipIf(why !== null)('ivshmem bench --vm', () => {
  it('runs every cell in one guest, and writes the vm section of the JSON and the chart', () => {
    const vm = report.vm!;
    expect(vm.available, vm.reason).toBe(true);
    expect(vm.cells.map((c) => c.error ?? 'ok')).toEqual(vm.cells.map(() => 'ok'));
    expect(vm.cells).toHaveLength(vmCells(resolveOptions({ quick: true })).length);
    expect(report.results).toEqual([]);
    const json = JSON.parse(readFileSync(join(dir, 'vm.json'), 'utf8')) as BenchReport;
    expect(json.vm!.cells).toHaveLength(vm.cells.length);
    expect(existsSync(join(dir, 'vm.svg'))).toBe(true);
    expect(readFileSync(join(dir, 'vm.svg'), 'utf8')).toContain('QEMU-traced');
    expect(stdout).toContain('guest→host: Doorbell writes counted by QEMU');
    expect(stdout).toContain('host→guest: MSI-X interrupts counted by the guest kernel');
  });

  it('QEMU counts one Doorbell write per pong and per streamed message, the guest kernel one interrupt per ping (qemu design)', () => {
    const pp = cell('ping-pong', 'qemu');
    expect(pp.guestToHost!.measured).toBe(MESSAGES / 2);
    expect(pp.hostToGuest!.measured).toBe(MESSAGES / 2);
    const s = cell('stream-to-host', 'qemu');
    expect(s.guestToHost!.instrument).toBe('qemu-trace');
    expect(s.guestToHost!.measured).toBe(MESSAGES);
    expect(s.guestToHost!.measuredPerMsg).toBe(1);
    // Host eventfd writes of the ping-pong: one per ping (the package's counters; strace checks those in test/doorbell/strace.test.ts).
    expect(pp.hostToGuest!.senderSignals).toBe(MESSAGES / 2);
  });

  it('the models agree with QEMU and the guest kernel on every cell', () => {
    for (const c of report.vm!.cells) {
      for (const d of [c.guestToHost!, c.hostToGuest!]) {
        // Exact but for an interrupt still in flight when the guest read its counts.
        expect(Math.abs(d.modelled - d.measured), `${c.workload}/${c.design}/${c.busyPoll} ${d.instrument}: model ${d.modelled}, measured ${d.measured}`).toBeLessThanOrEqual(1);
      }
    }
  });

  it('the bitmask suppresses: a stream into a busy guest takes far fewer interrupts than messages', () => {
    const q = cell('stream-to-guest', 'qemu');
    const b = cell('stream-to-guest', 'bitmask');
    expect(b.hostToGuest!.measured).toBeLessThan(b.hostToGuest!.messages);
    expect(b.hostToGuest!.suppressed).toBeGreaterThan(0);
    expect(b.hostToGuest!.measured).toBeLessThanOrEqual(q.hostToGuest!.senderSignals);
  });

  it('measures the round trip of Node and of the C pong in the same guest', () => {
    const [node, c] = report.vm!.latency;
    expect(node!.available, node!.reason).toBe(true);
    expect(c!.available, c!.reason).toBe(true);
    expect(node!.rttP50Us).toBeGreaterThan(0);
    expect(c!.rttP50Us).toBeGreaterThan(0);
    expect(report.vm!.nodeVsC).toBeGreaterThan(0);
  });
});
