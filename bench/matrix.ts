/**
 * The matrix: which cells a run has, how each is laid out over its processes (a run plan),
 * and how a cell's figures are derived from what the processes reported. Cells of one shape
 * (workload × peer count) share one server and one set of connected workers.
 */
import { cpus } from 'node:os';
import { Histogram } from './histogram.js';
import { layoutLanes, lanesEnd } from './lane.js';
import type { PlanOutcome, RunPlan } from './session.js';
import type { Collected, Finished, RoleSpec } from './protocol.js';
import type { AdapterName, CellResult, DesignName, LatencyKind, ResolvedOptions, Totals, WorkloadName } from './types.js';

export interface Shape {
  workload: WorkloadName;
  /** Producers (fan-in) or receivers (broadcast); 1 for ping-pong and stream. */
  n: number;
  /** Worker processes (peers) the shape needs. */
  processes: number;
}

export interface CellSpec extends Shape {
  design: DesignName;
  /** Messages the cell sends (ping-pong: one-way messages; broadcast: broadcasts). */
  sends: number;
  workNs: number;
  /** Ping-pong: wait for the responder to be idle before each ping. */
  sparse: boolean;
}

export function shapesOf(options: ResolvedOptions): Shape[] {
  const shapes: Shape[] = [];
  for (const workload of options.workloads) {
    if (workload === 'ping-pong' || workload === 'stream') shapes.push({ workload, n: 1, processes: 2 });
    else if (workload === 'fan-in') for (const n of options.producers) shapes.push({ workload, n, processes: n + 1 });
    else for (const n of options.peers) shapes.push({ workload, n, processes: n + 1 });
  }
  return shapes;
}

export function cellsOf(shape: Shape, options: ResolvedOptions): CellSpec[] {
  return options.designs.map((design) => ({
    ...shape,
    design,
    sends: options.messages[shape.workload],
    workNs: shape.workload === 'stream' ? options.workNs : 0,
    sparse: !options.backToBack,
  }));
}

/** Lays a cell out over the session's workers (worker i has peer ID ids[i]). */
export function planCell(
  cell: CellSpec,
  adapter: AdapterName,
  ids: readonly number[],
  dataOffset: number,
  dataEnd: number,
  slots: number,
): RunPlan {
  const sparse = cell.sparse;
  const label = `${cell.workload}${cell.workload === 'fan-in' || cell.workload === 'broadcast' ? ` ${cell.n}` : ''} / ${adapter}`;
  const roles: RoleSpec[] = [];
  let lanes;
  switch (cell.workload) {
    case 'ping-pong': {
      lanes = layoutLanes(dataOffset, 2, 16, 1); // one message in flight
      const [ab, ba] = lanes as [typeof lanes[0], typeof lanes[0]];
      roles.push({ kind: 'ping', out: ab, in: ba, other: ids[1]!, messages: cell.sends, sparse });
      roles.push({ kind: 'pong', out: ba, in: ab, other: ids[0]!, messages: cell.sends, sparse });
      break;
    }
    case 'stream':
    case 'fan-in': {
      lanes = layoutLanes(dataOffset, cell.n, slots, 1);
      roles.push({ kind: 'consumer', lanes, index: 0, messages: cell.sends, workNs: cell.workNs });
      const each = Math.floor(cell.sends / cell.n);
      const extra = cell.sends % cell.n;
      lanes.forEach((lane, i) => {
        roles.push({ kind: 'producer', lane, consumer: ids[0]!, messages: each + (i < extra ? 1 : 0) });
      });
      break;
    }
    case 'broadcast': {
      lanes = layoutLanes(dataOffset, 1, slots, cell.n);
      const lane = lanes[0]!;
      roles.push({ kind: 'broadcaster', lane, targets: ids.slice(1, cell.n + 1), messages: cell.sends });
      for (let k = 0; k < cell.n; k++) roles.push({ kind: 'consumer', lanes: [lane], index: k, messages: cell.sends, workNs: cell.workNs });
      break;
    }
  }
  if (lanesEnd(lanes) > dataEnd) throw new RangeError(`${label}: lanes need ${lanesEnd(lanes) - dataOffset} bytes, the shared memory has ${dataEnd - dataOffset}`);
  return { adapter, roles, label };
}

export function emptyTotals(): Totals {
  return { traps: 0, injections: 0, intercepts: 0, kernelCrossings: 0, eventfdWrites: 0, eventfdReads: 0, wakeups: 0, spurious: 0, rings: 0, suppressed: 0, acks: 0 };
}

/** Every process's counts added up. */
export function sumCollected(collected: readonly Collected[]): { totals: Totals; trapsByRegister: Record<string, { reads: number; writes: number }> } {
  const totals = emptyTotals();
  const byRegister: Record<string, { reads: number; writes: number }> = {};
  for (const c of collected) {
    if (c.totals !== null) for (const k of Object.keys(totals) as (keyof Totals)[]) totals[k] += c.totals[k];
    for (const [name, t] of Object.entries(c.trapsByRegister ?? {})) {
      const sum = (byRegister[name] ??= { reads: 0, writes: 0 });
      sum.reads += t.reads;
      sum.writes += t.writes;
    }
  }
  return { totals, trapsByRegister: byRegister };
}

/** Wall time of the cell: the first sender's start to the last receiver's end, on the shared clock. */
export function elapsedNs(finished: readonly Finished[]): number {
  let start = Infinity;
  let end = -Infinity;
  for (const f of finished) {
    if (f.startNs !== null && f.startNs < start) start = f.startNs;
    if (f.endNs > end) end = f.endNs;
  }
  if (!Number.isFinite(start)) throw new Error('no role reported a start time');
  return Math.max(1, end - start);
}

export function mergedLatency(finished: readonly Finished[]): Histogram {
  const h = new Histogram();
  for (const f of finished) if (f.latency !== null) h.merge(f.latency);
  return h;
}

export function deliveredOf(cell: CellSpec): number {
  return cell.workload === 'broadcast' ? cell.sends * cell.n : cell.sends;
}

export function latencyKindOf(workload: WorkloadName): LatencyKind {
  return workload === 'ping-pong' ? 'rtt/2' : 'one-way';
}

function shapeFields(
  cell: CellSpec,
): Pick<CellResult, 'workload' | 'design' | 'producers' | 'consumers' | 'messages' | 'latencyKind' | 'workNs' | 'processes' | 'oversubscribed'> & {
  broadcasts?: number;
  sparse?: boolean;
} {
  return {
    workload: cell.workload,
    design: cell.design,
    producers: cell.workload === 'fan-in' ? cell.n : 1,
    consumers: cell.workload === 'broadcast' ? cell.n : 1,
    messages: deliveredOf(cell),
    latencyKind: latencyKindOf(cell.workload),
    ...(cell.workload === 'broadcast' ? { broadcasts: cell.sends } : {}),
    ...(cell.workload === 'ping-pong' ? { sparse: cell.sparse } : {}),
    workNs: cell.workNs,
    processes: cell.processes,
    oversubscribed: cell.processes > cpus().length,
  };
}

const round = (x: number, digits = 4): number => Number(x.toFixed(digits));

/** A cell's figures from what its processes reported. */
export function cellResult(cell: CellSpec, outcome: PlanOutcome, placement?: string): CellResult {
  const messages = deliveredOf(cell);
  const { totals, trapsByRegister } = sumCollected(outcome.collected);
  const ns = elapsedNs(outcome.finished);
  const latency = mergedLatency(outcome.finished);
  const p50 = latency.quantile(0.5);
  const p99 = latency.quantile(0.99);
  const per = (x: number): number => round(x / messages, 6);
  return {
    ...shapeFields(cell),
    ...(placement === undefined ? {} : { placement }),
    msgsPerSec: Math.round(messages / (ns / 1e9)),
    latencyP50Us: p50 === null ? null : round(p50 / 1000, 3),
    latencyP99Us: p99 === null ? null : round(p99 / 1000, 3),
    trapsPerMsg: per(totals.traps),
    injectionsPerMsg: per(totals.injections),
    interceptsPerMsg: per(totals.intercepts),
    kernelCrossingsPerMsg: per(totals.kernelCrossings),
    suppressedFraction: totals.rings > 0 ? round(totals.suppressed / totals.rings, 6) : 0,
    elapsedMs: round(ns / 1e6, 3),
    totals,
    trapsByRegister,
  };
}

export function failedCell(cell: CellSpec, error: string): CellResult {
  return {
    ...shapeFields(cell),
    msgsPerSec: null,
    latencyP50Us: null,
    latencyP99Us: null,
    trapsPerMsg: null,
    injectionsPerMsg: null,
    interceptsPerMsg: null,
    kernelCrossingsPerMsg: null,
    suppressedFraction: null,
    elapsedMs: null,
    totals: null,
    trapsByRegister: null,
    error,
  };
}
