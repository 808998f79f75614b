/**
 * The bench's parts that need no process: histogram, lanes, options, formatting, ratios,
 * CPU lists, the chart spec.
 */
import { describe, expect, it } from 'vitest';
import { parseCpuList } from '../../bench/affinity.js';
import { CHART_FLOOR, chartData, chartSpec } from '../../bench/chart.js';
import { Histogram, percentile } from '../../bench/histogram.js';
import { Lane, laneBytes, layoutLanes } from '../../bench/lane.js';
import { failedCell, sumCollected } from '../../bench/matrix.js';
import { resolveOptions } from '../../bench/options.js';
import { formatPercent, formatPerMsg, ratios, renderReport, shapeTable } from '../../bench/report.js';
import type { BenchReport, CellResult } from '../../bench/types.js';

describe('Histogram', () => {
  it('gives percentiles within 1 % of the exact ones, merged across processes', () => {
    const samples = Array.from({ length: 10_000 }, (_, i) => 1000 + ((i * 7919) % 10_000) * 13.7);
    const a = new Histogram();
    const b = new Histogram();
    samples.forEach((s, i) => (i % 2 === 0 ? a : b).record(s));
    const merged = new Histogram();
    merged.merge(a.toJSON());
    merged.merge(b.toJSON());
    expect(merged.count).toBe(samples.length);
    for (const q of [0.5, 0.9, 0.99]) {
      const exact = percentile(samples, q)!;
      expect(Math.abs(merged.quantile(q)! - exact) / exact).toBeLessThan(0.011);
    }
  });

  it('is null when empty, never reports outside what was recorded, and rejects garbage', () => {
    expect(new Histogram().quantile(0.5)).toBeNull();
    const h = new Histogram();
    h.record(500);
    expect(h.quantile(0.5)).toBe(500);
    expect(h.quantile(0.99)).toBe(500);
    expect(() => h.merge([[-1, 3]])).toThrow(RangeError);
    expect(() => h.merge([[5, Number.NaN]])).toThrow(RangeError);
  });
});

describe('Lane', () => {
  it('hands every message to every consumer in order, and the producer waits for the slowest', () => {
    const spec = layoutLanes(0, 1, 4, 2)[0]!;
    const buffer = new ArrayBuffer(laneBytes(4, 2));
    const producer = new Lane(buffer, spec);
    const c0 = new Lane(buffer, spec);
    const c1 = new Lane(buffer, spec);
    for (let i = 0; i < 4; i++) producer.publish(100 + i);
    expect(producer.free()).toBe(0);
    expect(c0.available()).toBe(4);
    expect(c0.take(0)).toBe(100);
    expect(c0.take(0)).toBe(101);
    expect(producer.free()).toBe(0); // consumer 1 has taken nothing
    expect(c1.take(1)).toBe(100);
    expect(producer.free()).toBe(1);
    producer.publish(104);
    expect(c1.take(1)).toBe(101);
    expect(c0.take(0)).toBe(102);
  });

  it('fails loudly on a lost or torn message', () => {
    const spec = layoutLanes(64, 1, 4, 1)[0]!;
    const buffer = new ArrayBuffer(64 + laneBytes(4, 1));
    const producer = new Lane(buffer, spec);
    const consumer = new Lane(buffer, spec);
    producer.publish(1);
    new Float64Array(buffer, 64 + 128, 8)[0] = 99; // slot 0's sequence number overwritten
    expect(() => consumer.take(0)).toThrow(/lane check failed/);
  });

  it('keeps lanes 64-byte aligned and apart', () => {
    const lanes = layoutLanes(4096, 3, 16, 1);
    for (const l of lanes) expect(l.offset % 64).toBe(0);
    expect(lanes[1]!.offset - lanes[0]!.offset).toBeGreaterThanOrEqual(laneBytes(16, 1));
  });
});

describe('options', () => {
  it('has quick and full defaults, an even ping-pong count, and matrix order', () => {
    const quick = resolveOptions({ quick: true });
    expect(quick.messages['ping-pong'] % 2).toBe(0);
    expect(quick.messages.stream).toBeLessThan(resolveOptions({}).messages.stream);
    expect(resolveOptions({ messages: 101 }).messages['ping-pong']).toBe(100);
    expect(resolveOptions({ designs: ['qemu', 'legacy2010'] }).designs).toEqual(['legacy2010', 'qemu']);
    expect(resolveOptions({ producers: [4, 1, 4] }).producers).toEqual([1, 4]);
  });

  it('rejects what makes no sense', () => {
    expect(() => resolveOptions({ workloads: ['nope' as never] })).toThrow(/unknown workload/);
    expect(() => resolveOptions({ designs: ['vhost' as never] })).toThrow(/unknown design/);
    expect(() => resolveOptions({ messages: 0 })).toThrow(RangeError);
    expect(() => resolveOptions({ slots: 1000 })).toThrow(/power of two/);
    expect(() => resolveOptions({ producers: [] })).toThrow(RangeError);
  });
});

describe('formatting, ratios and the chart', () => {
  const base = (over: Partial<CellResult>): CellResult => ({
    workload: 'ping-pong',
    design: 'qemu',
    producers: 1,
    consumers: 1,
    messages: 100,
    msgsPerSec: 1000,
    latencyP50Us: 20,
    latencyP99Us: 40,
    trapsPerMsg: 1,
    injectionsPerMsg: 1,
    interceptsPerMsg: 2,
    kernelCrossingsPerMsg: 3,
    suppressedFraction: 0,
    latencyKind: 'rtt/2',
    workNs: 0,
    processes: 2,
    oversubscribed: false,
    elapsedMs: 100,
    totals: null,
    trapsByRegister: null,
    ...over,
  });

  it('formats per-message counts and fractions without lying about 0 and 100 %', () => {
    expect(formatPerMsg(3)).toBe('3');
    expect(formatPerMsg(0.00005)).toBe('0.00005');
    expect(formatPerMsg(1.00055)).toBe('1.001');
    expect(formatPercent(0.99995)).toBe('99.99%');
    expect(formatPercent(0.00001)).toBe('0.01%');
    expect(formatPercent(0)).toBe('0%');
    expect(formatPercent(1)).toBe('100%');
  });

  it('computes the ratios against the baselines of the run', () => {
    const report = {
      results: [base({ latencyP50Us: 20 })],
      baselines: [
        { name: 'c-eventfd-pingpong', available: true, rttP50Us: 10, description: '' },
        { name: 'node-unix-socket-pingpong', available: false, reason: 'x', description: '' },
      ],
      micro: [
        { name: 'atomics-or', p50Ns: 8, p99Ns: 9, meanNs: 8, batch: 1000, samples: 10, description: '' },
        { name: 'ring-suppressed', p50Ns: 12, p99Ns: 13, meanNs: 12, batch: 1000, samples: 10, description: '' },
      ],
    };
    const lines = ratios(report);
    const rtt = lines.find((l) => l.against === 'c-eventfd-pingpong')!;
    expect(rtt.values[0]).toEqual({ name: 'ping-pong/qemu', ratio: 4 }); // round trip 40 µs vs 10
    expect(lines.find((l) => l.against === 'node-unix-socket-pingpong')).toBeUndefined();
    expect(lines.find((l) => l.against === 'atomics-or')!.values[0]!.ratio).toBeCloseTo(1.5);
  });

  it('shows a failed cell as FAILED with its error, and sums counts across processes', () => {
    const failed = failedCell(
      { workload: 'ping-pong', n: 1, processes: 2, design: 'bitmask', sends: 10, workNs: 0, sparse: true },
      'timed out after 1.0 s waiting for x',
    );
    const text = shapeTable([base({}), failed]);
    expect(text).toContain('FAILED');
    expect(text).toContain('timed out after 1.0 s');
    const summed = sumCollected([
      { totals: { traps: 1, injections: 2, intercepts: 3, kernelCrossings: 4, eventfdWrites: 1, eventfdReads: 1, wakeups: 2, spurious: 0, rings: 5, suppressed: 4, acks: 1 }, trapsByRegister: { Doorbell: { reads: 0, writes: 1 } } },
      { totals: { traps: 2, injections: 0, intercepts: 2, kernelCrossings: 1, eventfdWrites: 1, eventfdReads: 0, wakeups: 0, spurious: 0, rings: 0, suppressed: 0, acks: 0 }, trapsByRegister: { Doorbell: { reads: 0, writes: 2 } } },
      { totals: null, trapsByRegister: null },
    ]);
    expect(summed.totals.traps).toBe(3);
    expect(summed.totals.rings).toBe(5);
    expect(summed.trapsByRegister.Doorbell).toEqual({ reads: 0, writes: 3 });
  });

  it('charts intercepts/msg on a log scale, drawing 0 at the floor with its real label', () => {
    const results = [base({ design: 'qemu', interceptsPerMsg: 2 }), base({ design: 'bitmask', interceptsPerMsg: 0 }), failedCell({ workload: 'stream', n: 1, processes: 2, design: 'qemu', sends: 1, workNs: 0, sparse: true }, 'x')];
    const data = chartData(results);
    expect(data).toHaveLength(2);
    expect(data.find((d) => d.design === 'bitmask')).toMatchObject({ plotted: CHART_FLOOR, label: '0' });
    const spec = JSON.stringify(chartSpec({ results, machine: { cpuModel: 'cpu', cores: 2, kernel: 'k', node: 'v20' } as BenchReport['machine'], options: resolveOptions({ quick: true }) }));
    expect(spec).toContain('"type":"log"');
    expect(spec).toContain('xOffset');
  });

  it('renders a report with nothing but a machine line when nothing ran', () => {
    const text = renderReport({
      machine: { cpuModel: 'cpu', cores: 2, kernel: 'k', node: 'v20', loadAverage: [0, 0, 0] } as unknown as BenchReport['machine'],
      options: resolveOptions({}),
      results: [],
      micro: [],
      baselines: [],
      durationMs: 0,
    });
    expect(text).toContain('cpu, 2 cores');
  });
});

describe('CPU lists', () => {
  it('parses the kernel\'s list format', () => {
    expect(parseCpuList('0-3,6,8-9')).toEqual([0, 1, 2, 3, 6, 8, 9]);
    expect(parseCpuList('1')).toEqual([1]);
    expect(parseCpuList('')).toEqual([]);
  });
});
