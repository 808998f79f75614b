/**
 * The bench's counts for a tiny fixed run are consistent: the sparse ping-pong gives each
 * design's textbook count exactly (qemu 1 trap + 1 injection, legacy2010 2 + 1, with mask
 * 4 + 1, bitmask an edge per message), the other workloads keep the invariants that hold
 * whatever the timing (one Doorbell write per message for qemu, rings = messages for the
 * bitmask, ...), no figure is negative or NaN, and the report has every cell and every field
 * of the JSON contract.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { renderChartSvg } from '../../bench/chart.js';
import { renderReport } from '../../bench/report.js';
import { runBench } from '../../bench/run.js';
import { DESIGNS, WORKLOADS, type BenchReport, type CellResult } from '../../bench/types.js';
import { assertWorkersBuilt, cell, numbersIn, totals, traps } from './helpers.js';

const MESSAGES = 200;
let report: BenchReport;

beforeAll(async () => {
  assertWorkersBuilt();
  report = await runBench({
    messages: MESSAGES,
    producers: [1, 2],
    peers: [2],
    workNs: 200,
    slots: 64, // small lanes: the producers wait for room, the consumers sleep and wake
    micro: false,
    baselines: false,
    vm: false,
    timeoutMs: 30_000,
  });
}, 120_000);

describe('the sparse ping-pong gives the textbook counts exactly', () => {
  it('qemu: one trap (the Doorbell write) and one injection per message', () => {
    const c = cell(report.results, 'ping-pong', 'qemu');
    expect(c.messages).toBe(MESSAGES);
    expect(c.trapsPerMsg).toBe(1);
    expect(c.injectionsPerMsg).toBe(1);
    expect(c.interceptsPerMsg).toBe(2);
    expect(traps(c, 'Doorbell', 'writes')).toBe(MESSAGES);
    expect(totals(c).eventfdWrites).toBe(MESSAGES);
  });

  it('legacy2010: two traps (Doorbell + IntrStatus) and one injection per message; with mask, four', () => {
    const c = cell(report.results, 'ping-pong', 'legacy2010');
    expect(c.trapsPerMsg).toBe(2);
    expect(c.injectionsPerMsg).toBe(1);
    expect(c.interceptsPerMsg).toBe(3);
    expect(traps(c, 'Doorbell', 'writes')).toBe(MESSAGES);
    expect(traps(c, 'IntrStatus', 'reads')).toBe(MESSAGES);
    const m = cell(report.results, 'ping-pong', 'legacy2010-mask');
    expect(m.trapsPerMsg).toBe(4);
    expect(m.injectionsPerMsg).toBe(1);
    expect(m.interceptsPerMsg).toBe(5);
    expect(traps(m, 'IntrMask', 'writes')).toBe(2 * MESSAGES);
  });

  it('bitmask: every message is a 0->1 edge (signalled, never suppressed); w1c adds the PendingClear trap', () => {
    const c = cell(report.results, 'ping-pong', 'bitmask');
    const t = totals(c);
    expect(t.rings).toBe(MESSAGES);
    expect(t.suppressed).toBe(0);
    expect(t.eventfdWrites).toBe(MESSAGES);
    expect(c.suppressedFraction).toBe(0);
    expect(c.trapsPerMsg).toBe(1);
    expect(c.injectionsPerMsg).toBe(1);
    const w = cell(report.results, 'ping-pong', 'bitmask-w1c');
    expect(totals(w).eventfdWrites).toBe(MESSAGES);
    expect(w.trapsPerMsg).toBe(2);
    expect(traps(w, 'PendingClear', 'writes')).toBe(totals(w).acks);
    expect(w.interceptsPerMsg).toBe(3);
  });

  it('every design costs 3 kernel crossings per message (eventfd write, read, wakeup)', () => {
    for (const d of DESIGNS) expect(cell(report.results, 'ping-pong', d).kernelCrossingsPerMsg).toBe(3);
  });
});

describe('the other workloads keep what holds whatever the timing', () => {
  const streamLike = (): CellResult[] => report.results.filter((r) => r.workload === 'stream' || r.workload === 'fan-in');

  it('qemu: exactly one Doorbell write per message; injections coalesce (at least one, at most one per message)', () => {
    for (const c of streamLike().filter((r) => r.design === 'qemu')) {
      expect(traps(c, 'Doorbell', 'writes')).toBe(c.messages);
      expect(c.trapsPerMsg).toBe(1);
      const t = totals(c);
      expect(t.injections).toBeGreaterThanOrEqual(1);
      expect(t.injections).toBeLessThanOrEqual(c.messages);
      // QEMU drains and injects once per wakeup that found something.
      expect(t.injections + t.spurious).toBe(t.wakeups);
    }
  });

  it('legacy2010: one Doorbell write per message, one IntrStatus read per injection (+ mask and unmask)', () => {
    for (const c of streamLike().filter((r) => r.design.startsWith('legacy2010'))) {
      expect(traps(c, 'Doorbell', 'writes')).toBe(c.messages);
      expect(traps(c, 'IntrStatus', 'reads')).toBe(totals(c).injections);
      expect(traps(c, 'IntrMask', 'writes')).toBe(c.design === 'legacy2010-mask' ? 2 * totals(c).injections : 0);
    }
  });

  it('bitmask: one ring per message; each ring is either suppressed or a signal (a Doorbell trap)', () => {
    for (const c of streamLike().filter((r) => r.design.startsWith('bitmask'))) {
      const t = totals(c);
      expect(t.rings).toBe(c.messages);
      expect(t.suppressed + t.eventfdWrites).toBe(t.rings);
      expect(traps(c, 'Doorbell', 'writes')).toBe(t.eventfdWrites);
      expect(traps(c, 'PendingClear', 'writes')).toBe(c.design === 'bitmask-w1c' ? t.acks : 0);
      expect(t.injections + t.spurious).toBe(t.wakeups);
      expect(c.suppressedFraction).toBeCloseTo(t.suppressed / t.rings, 5);
    }
  });

  it('broadcast: messages = broadcasts × receivers; qemu one Doorbell per delivery, legacy2010 one per broadcast', () => {
    const q = cell(report.results, 'broadcast', 'qemu', 2);
    expect(q.broadcasts).toBe(MESSAGES);
    expect(q.messages).toBe(2 * MESSAGES);
    expect(traps(q, 'Doorbell', 'writes')).toBe(2 * MESSAGES);
    const l = cell(report.results, 'broadcast', 'legacy2010', 2);
    expect(traps(l, 'Doorbell', 'writes')).toBe(MESSAGES);
    expect(totals(l).eventfdWrites).toBe(2 * MESSAGES);
    for (const d of ['bitmask', 'bitmask-w1c']) {
      const b = cell(report.results, 'broadcast', d, 2);
      const t = totals(b);
      expect(t.rings).toBe(2 * MESSAGES);
      expect(t.suppressed + t.eventfdWrites).toBe(t.rings);
    }
  });
});

describe('the figures and the JSON contract', () => {
  it('has every cell of the matrix, none failed', () => {
    const expected = WORKLOADS.flatMap((w) => {
      const ns = w === 'fan-in' ? [1, 2] : w === 'broadcast' ? [2] : [1];
      return ns.flatMap((n) => DESIGNS.map((d) => `${w}/${n}/${d}`));
    });
    const got = report.results.map((r) => `${r.workload}/${r.workload === 'broadcast' ? r.consumers : r.producers}/${r.design}`);
    expect(got.sort()).toEqual(expected.sort());
    for (const r of report.results) expect(r.error).toBeUndefined();
  });

  it('every result has every contract field, with sane values', () => {
    const fields = [
      'workload',
      'design',
      'producers',
      'consumers',
      'messages',
      'msgsPerSec',
      'latencyP50Us',
      'latencyP99Us',
      'trapsPerMsg',
      'injectionsPerMsg',
      'interceptsPerMsg',
      'kernelCrossingsPerMsg',
      'suppressedFraction',
    ];
    for (const r of report.results) {
      for (const f of fields) expect(r, `${r.workload}/${r.design}.${f}`).toHaveProperty(f);
      expect(WORKLOADS).toContain(r.workload);
      expect(DESIGNS).toContain(r.design);
      expect(r.msgsPerSec!).toBeGreaterThan(0);
      expect(r.latencyP50Us!).toBeGreaterThan(0);
      expect(r.latencyP99Us!).toBeGreaterThanOrEqual(r.latencyP50Us!);
      expect(r.interceptsPerMsg!).toBeCloseTo(r.trapsPerMsg! + r.injectionsPerMsg!, 5);
      expect(r.suppressedFraction!).toBeGreaterThanOrEqual(0);
      expect(r.suppressedFraction!).toBeLessThanOrEqual(1);
      const t = totals(r);
      expect(t.intercepts).toBe(t.traps + t.injections);
      expect(t.kernelCrossings).toBe(t.eventfdWrites + t.eventfdReads + t.wakeups);
      expect(r.latencyKind).toBe(r.workload === 'ping-pong' ? 'rtt/2' : 'one-way');
    }
  });

  it('no figure anywhere in the report is negative, NaN or infinite', () => {
    for (const { path, value } of numbersIn(report)) {
      expect(Number.isFinite(value), `${path} = ${value}`).toBe(true);
      expect(value, path).toBeGreaterThanOrEqual(0);
    }
  });

  it('round-trips through JSON with the machine, results, micro and baselines sections', () => {
    const parsed = JSON.parse(JSON.stringify(report)) as Record<string, unknown>;
    for (const key of ['machine', 'results', 'micro', 'baselines']) expect(parsed).toHaveProperty(key);
    const machine = parsed.machine as Record<string, unknown>;
    for (const key of ['cpuModel', 'cores', 'kernel', 'node']) expect(machine).toHaveProperty(key);
    expect(machine.node).toBe(process.version);
  });

  it('renders the tables (designs side by side) and the chart', async () => {
    const text = renderReport(report);
    for (const d of DESIGNS) expect(text).toContain(d);
    expect(text).toContain('intercepts per message');
    expect(text).toContain('fan-in — 2 producers → 1 consumer');
    const svg = await renderChartSvg(report);
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('Intercepts per message');
    for (const d of DESIGNS) expect(svg).toContain(d);
  });
});
