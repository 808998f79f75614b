/**
 * The terminal report: one table per workload shape with the designs side by side, a summary
 * of intercepts per message, the baselines, the micro benchmarks, and the ratios against the
 * baselines of the same run.
 */
import { describeMachine } from './machine.js';
import type { BaselineResult, BenchReport, CellResult, DesignName, MicroResult } from './types.js';
import { DESIGNS } from './types.js';

// ------------------------------------------------------------------------------------ format

export function formatCount(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  return Math.round(n).toLocaleString('en-US');
}

/** 3 significant digits, no exponent: 0.000123, 1.23, 12.3, 1,234. */
export function formatSig(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  if (n === 0) return '0';
  const a = Math.abs(n);
  if (a >= 1000) return formatCount(n);
  const digits = Math.max(0, 2 - Math.floor(Math.log10(a)));
  return n.toFixed(digits);
}

/** Per-message counts: exact integers stay integers, fractions keep 4 significant digits. */
export function formatPerMsg(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  if (Number.isInteger(n)) return String(n);
  const a = Math.abs(n);
  const digits = Math.min(6, Math.max(0, 3 - Math.floor(Math.log10(a))));
  return Number(n.toFixed(digits)).toString();
}

/** A percentage that never rounds a non-zero fraction to 0 % nor a fraction below 1 to 100 %. */
export function formatPercent(fraction: number | null | undefined): string {
  if (fraction === null || fraction === undefined || !Number.isFinite(fraction)) return '–';
  const p = fraction * 100;
  if (p <= 0 || p >= 100) return `${Math.min(100, Math.max(0, p))}%`;
  if (p >= 99) return `${(Math.floor(p * 100) / 100).toFixed(2)}%`;
  if (p < 1) return `${(Math.ceil(p * 100) / 100).toFixed(2)}%`;
  return `${p.toFixed(1)}%`;
}

export function formatRatio(r: number | null): string {
  if (r === null || !Number.isFinite(r)) return '–';
  return `${r >= 10 ? r.toFixed(0) : r >= 1 ? r.toFixed(2) : r.toFixed(3)}×`;
}

/** Left column left-aligned, the others right-aligned; columns separated by two spaces. */
export function table(rows: string[][], indent = '  '): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, [...cell].length)));
  return rows
    .map((row) =>
      indent +
      row
        .map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

// ------------------------------------------------------------------------------------ cells

export function shapeTitle(c: CellResult): string {
  const where = c.placement === 'one CPU each' ? ', one CPU each' : '';
  const procs = `${c.processes} processes${where}${c.oversubscribed ? ', more than the cores: oversubscribed' : ''}`;
  switch (c.workload) {
    case 'ping-pong':
      return `ping-pong — 2 peers, one message in flight, ${c.sparse === false ? 'back-to-back (the reply rung from inside the handler)' : 'sparse (each ping waits until the responder is idle)'}; latency = round trip / 2 (${procs})`;
    case 'stream':
      return `stream — 1 producer → 1 consumer, ${c.workNs} ns of work per message; latency one-way incl. queueing (${procs})`;
    case 'fan-in':
      return `fan-in — ${c.producers} producer${c.producers === 1 ? '' : 's'} → 1 consumer, no work; latency one-way incl. queueing (${procs})`;
    case 'broadcast':
      return `broadcast — 1 sender → ${c.consumers} receivers, per delivery (${c.broadcasts ?? '?'} broadcasts × ${c.consumers}); latency one-way (${procs})`;
  }
}

export function shapeKey(c: Pick<CellResult, 'workload' | 'producers' | 'consumers'>): string {
  return `${c.workload}/${c.producers}/${c.consumers}`;
}

/** Cells grouped by shape, in run order. */
export function groupByShape(results: readonly CellResult[]): CellResult[][] {
  const groups = new Map<string, CellResult[]>();
  for (const r of results) {
    const key = shapeKey(r);
    let g = groups.get(key);
    if (g === undefined) groups.set(key, (g = []));
    g.push(r);
  }
  return [...groups.values()];
}

const METRICS: { label: string; value: (c: CellResult) => string }[] = [
  { label: 'msg/s', value: (c) => formatCount(c.msgsPerSec) },
  { label: 'latency p50 µs', value: (c) => formatSig(c.latencyP50Us) },
  { label: 'latency p99 µs', value: (c) => formatSig(c.latencyP99Us) },
  { label: 'traps/msg', value: (c) => formatPerMsg(c.trapsPerMsg) },
  { label: 'injections/msg', value: (c) => formatPerMsg(c.injectionsPerMsg) },
  { label: 'intercepts/msg', value: (c) => formatPerMsg(c.interceptsPerMsg) },
  { label: 'kernel crossings/msg', value: (c) => formatPerMsg(c.kernelCrossingsPerMsg) },
  { label: 'suppressed rings', value: (c) => formatPercent(c.suppressedFraction) },
];

function designsIn(cells: readonly CellResult[]): DesignName[] {
  return DESIGNS.filter((d) => cells.some((c) => c.design === d));
}

export function shapeTable(cells: readonly CellResult[]): string {
  const designs = designsIn(cells);
  const byDesign = new Map(cells.map((c) => [c.design, c]));
  const rows: string[][] = [['', ...designs]];
  for (const m of METRICS) rows.push([m.label, ...designs.map((d) => (byDesign.get(d)?.error ? 'FAILED' : m.value(byDesign.get(d)!)))]);
  const errors = cells.filter((c) => c.error !== undefined).map((c) => `  ✗ ${c.design}: ${c.error!.split('\n')[0]}`);
  return [shapeTitle(cells[0]!), table(rows), ...errors].join('\n');
}

export function shapeLabel(c: Pick<CellResult, 'workload' | 'producers' | 'consumers'>): string {
  if (c.workload === 'fan-in') return `fan-in ${c.producers}→1`;
  if (c.workload === 'broadcast') return `broadcast 1→${c.consumers}`;
  return c.workload;
}

export function interceptSummary(results: readonly CellResult[]): string {
  const designs = designsIn(results);
  const rows: string[][] = [['intercepts per message', ...designs]];
  for (const group of groupByShape(results)) {
    const byDesign = new Map(group.map((c) => [c.design, c]));
    rows.push([shapeLabel(group[0]!), ...designs.map((d) => formatPerMsg(byDesign.get(d)?.interceptsPerMsg))]);
  }
  return table(rows);
}

// ------------------------------------------------------------------------------------ baselines, micro

export function baselineTable(baselines: readonly BaselineResult[]): string {
  const rows: string[][] = [['baseline', 'RTT p50 µs', 'RTT p99 µs', 'msg/s', 'intercepts/msg', 'placement']];
  for (const b of baselines) {
    if (!b.available) {
      rows.push([b.name, 'unavailable', '', '', '', '']);
      continue;
    }
    rows.push([
      b.name,
      formatSig(b.rttP50Us),
      formatSig(b.rttP99Us),
      formatCount(b.msgsPerSec),
      b.interceptsPerMsg == null ? '' : formatPerMsg(b.interceptsPerMsg),
      b.placement ?? '',
    ]);
  }
  const notes = baselines.filter((b) => !b.available).map((b) => `  ${b.name}: ${b.reason}`);
  const split = baselines.filter((b) => b.available && b.dataInterceptsPerMsg !== undefined && b.spaceInterceptsPerMsg !== undefined);
  if (split.length > 0) {
    notes.push('  channel streams, intercepts/msg by direction: data (the producer rings the consumer) + space (the consumer rings a producer waiting for space)');
    const width = Math.max(...split.map((b) => b.name.length));
    for (const b of split) notes.push(`    ${b.name.padEnd(width)}  ${formatPerMsg(b.dataInterceptsPerMsg!)} + ${formatPerMsg(b.spaceInterceptsPerMsg!)}`);
  }
  return [table(rows), ...notes].join('\n');
}

export function microTable(micro: readonly MicroResult[]): string {
  const rows: string[][] = [['micro (per op)', 'p50 ns', 'p99 ns', 'batch']];
  for (const m of micro) rows.push([m.name, formatSig(m.p50Ns), formatSig(m.p99Ns), String(m.batch)]);
  return [
    table(rows),
    '  tinybench runs each task as a batch of ops in a loop (its ~40 ns per-call overhead would swamp a',
    '  ~15 ns op); per-op ns = batch time / batch size, and p50/p99 are over those batch averages.',
  ].join('\n');
}

// ------------------------------------------------------------------------------------ ratios

const find = <T extends { name: string }>(list: readonly T[], name: string): T | undefined => list.find((x) => x.name === name);

function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a == null || b == null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return null;
  return a / b;
}

export interface RatioLine {
  what: string;
  against: string;
  values: { name: string; ratio: number | null }[];
}

/** Every figure that has a baseline in the same run, as a ratio to it. */
export function ratios(report: Pick<BenchReport, 'results' | 'baselines' | 'micro'>): RatioLine[] {
  const lines: RatioLine[] = [];
  const pingpong = report.results.filter((r) => r.workload === 'ping-pong' && r.error === undefined);
  const stream = report.results.filter((r) => r.workload === 'stream' && r.error === undefined);
  const ivPing = find(report.baselines, 'ivshmem-pingpong');
  const ivBusy = find(report.baselines, 'ivshmem-pingpong-busypoll');
  for (const base of ['c-eventfd-pingpong', 'c-eventfd-epoll-pingpong', 'node-unix-socket-pingpong', 'c-eventfd-pingpong-same-cpu']) {
    const b = find(report.baselines, base);
    if (b === undefined || !b.available) continue;
    lines.push({
      what: 'round trip p50 (lower is better)',
      against: base,
      values: [
        ...pingpong.map((r) => ({ name: `ping-pong/${r.design}`, ratio: ratio(r.latencyP50Us == null ? null : 2 * r.latencyP50Us, b.rttP50Us) })),
        ...(ivPing?.available ? [{ name: 'ivshmem-pingpong', ratio: ratio(ivPing.rttP50Us, b.rttP50Us) }] : []),
        ...(ivBusy?.available ? [{ name: 'ivshmem-pingpong-busypoll', ratio: ratio(ivBusy.rttP50Us, b.rttP50Us) }] : []),
      ],
    });
  }
  if (ivPing?.available && ivBusy?.available) {
    lines.push({
      what: 'round trip p50 (lower is better)',
      against: 'ivshmem-pingpong (blocking)',
      values: [{ name: 'ivshmem-pingpong-busypoll', ratio: ratio(ivBusy.rttP50Us, ivPing.rttP50Us) }],
    });
  }
  const netStream = find(report.baselines, 'node-unix-socket-stream');
  if (netStream?.available) {
    lines.push({
      what: 'msg/s (higher is better)',
      against: 'node-unix-socket-stream',
      values: [
        ...stream.map((r) => ({ name: `stream/${r.design} (with ${r.workNs} ns work/msg)`, ratio: ratio(r.msgsPerSec, netStream.msgsPerSec) })),
        ...CHANNEL_STREAM_NAMES.map((n) => find(report.baselines, n))
          .filter((b) => b?.available === true)
          .map((b) => ({ name: b!.name, ratio: ratio(b!.msgsPerSec, netStream.msgsPerSec) })),
      ],
    });
  }
  lines.push(...channelRatios(report.baselines));
  const netPing = find(report.baselines, 'node-unix-socket-pingpong');
  if (netPing?.available && ivPing?.available) {
    lines.push({ what: 'ping-pong msg/s (higher is better)', against: 'node-unix-socket-pingpong', values: [{ name: 'ivshmem-pingpong', ratio: ratio(ivPing.msgsPerSec, netPing.msgsPerSec) }] });
  }
  const atomics = find(report.micro, 'atomics-or');
  const suppressed = find(report.micro, 'ring-suppressed');
  const signalled = find(report.micro, 'ring-signalled');
  const write = find(report.micro, 'eventfd-write');
  if (atomics && suppressed) {
    lines.push({ what: 'ns per op p50', against: 'atomics-or', values: [{ name: 'ring-suppressed', ratio: ratio(suppressed.p50Ns, atomics.p50Ns) }] });
  }
  if (write && signalled) {
    lines.push({ what: 'ns per op p50', against: 'eventfd-write', values: [{ name: 'ring-signalled', ratio: ratio(signalled.p50Ns, write.p50Ns) }, ...(suppressed ? [{ name: 'ring-suppressed', ratio: ratio(suppressed.p50Ns, write.p50Ns) }] : [])] });
  }
  return lines;
}

/** The channel streams that move as fast as they can (the busy consumer's pace is its work). */
const CHANNEL_STREAM_NAMES = ['ivshmem-channel-stream', 'ivshmem-channel-stream-busypoll', 'ivshmem-channel-stream-single'];

/** The channel against its ceilings (the bare rings) and the doorbell ping-pong of the same run. */
function channelRatios(baselines: readonly BaselineResult[]): RatioLine[] {
  const lines: RatioLine[] = [];
  const streams = CHANNEL_STREAM_NAMES.map((n) => find(baselines, n)).filter((b) => b?.available === true);
  for (const ceiling of ['js-ring-stream', 'c-ring-stream']) {
    const c = find(baselines, ceiling);
    if (!c?.available || streams.length === 0) continue;
    lines.push({ what: 'msg/s, fraction of the ceiling (higher is better)', against: ceiling, values: streams.map((b) => ({ name: b!.name, ratio: ratio(b!.msgsPerSec, c.msgsPerSec) })) });
  }
  for (const [channel, doorbell] of [
    ['ivshmem-channel-pingpong', 'ivshmem-pingpong'],
    ['ivshmem-channel-pingpong-busypoll', 'ivshmem-pingpong-busypoll'],
  ] as const) {
    const a = find(baselines, channel);
    const b = find(baselines, doorbell);
    if (a?.available && b?.available) lines.push({ what: 'one-way p50 (lower is better)', against: doorbell, values: [{ name: channel, ratio: ratio(a.rttP50Us, b.rttP50Us) }] });
  }
  return lines;
}

export function ratioText(lines: readonly RatioLine[]): string {
  const width = Math.max(0, ...lines.flatMap((l) => l.values.map((v) => v.name.length)));
  return lines
    .map((l) => `  ${l.what} vs ${l.against}:\n${l.values.map((v) => `    ${v.name.padEnd(width)}  ${formatRatio(v.ratio)}`).join('\n')}`)
    .join('\n');
}

// ------------------------------------------------------------------------------------ all

export function renderReport(report: BenchReport): string {
  const parts: string[] = [];
  parts.push(`ivshmem bench${report.options.quick ? ' --quick' : ''} — ${describeMachine(report.machine)}`);
  parts.push(
    'Counts are summed over every process of a cell from its device model\'s stats(); per message = count / messages delivered.',
  );
  if (report.results.length > 0) {
    for (const group of groupByShape(report.results)) parts.push(shapeTable(group));
    parts.push(interceptSummary(report.results));
  }
  if (report.baselines.length > 0) parts.push(baselineTable(report.baselines));
  if (report.micro.length > 0) parts.push(microTable(report.micro));
  const r = ratios(report);
  if (r.length > 0) parts.push(`ratios against the baselines of this run\n${ratioText(r)}`);
  const failed = report.results.filter((c) => c.error !== undefined).length;
  if (failed > 0) parts.push(`${failed} cell${failed === 1 ? '' : 's'} FAILED (see above)`);
  return `${parts.join('\n\n')}\n`;
}
