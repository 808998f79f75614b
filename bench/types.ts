/**
 * The benchmark's vocabulary and its JSON contract (other tools read bench-results.json: the
 * names below are kept; fields are only ever added).
 */
import type { DeviceStats } from '../lib/devices/index.js';

export const WORKLOADS = ['ping-pong', 'stream', 'fan-in', 'broadcast'] as const;
export type WorkloadName = (typeof WORKLOADS)[number];

export const DESIGNS = ['legacy2010', 'legacy2010-mask', 'qemu', 'bitmask', 'bitmask-w1c'] as const;
export type DesignName = (typeof DESIGNS)[number];

/**
 * Adapters the workload driver can run over: the five designs of the matrix, plus `ivshmem`
 * (the library's own BitmaskDoorbell with no device model), used for the `ivshmem-pingpong`
 * baseline.
 */
export type AdapterName = DesignName | 'ivshmem' | 'ivshmem-busypoll';

/** How a cell's latency figures were measured. */
export type LatencyKind = 'rtt/2' | 'one-way';

/** Counts summed over every process of a cell (each one a device's `stats()`). */
export type Totals = Omit<DeviceStats, 'design' | 'trapsByRegister'>;

export interface CellResult {
  workload: WorkloadName;
  design: DesignName;
  producers: number;
  consumers: number;
  /** Messages delivered: one-way messages (ping-pong: 2 per round trip; broadcast: one per receiver per broadcast). */
  messages: number;
  msgsPerSec: number | null;
  latencyP50Us: number | null;
  latencyP99Us: number | null;
  trapsPerMsg: number | null;
  injectionsPerMsg: number | null;
  interceptsPerMsg: number | null;
  kernelCrossingsPerMsg: number | null;
  suppressedFraction: number | null;
  // ---- additions (not part of the original contract, stable all the same)
  /** 'rtt/2' (ping-pong: round trip / 2) or 'one-way' (timestamp in the message, queueing included). */
  latencyKind: LatencyKind;
  /** Broadcast only: broadcasts sent (messages = broadcasts × consumers). */
  broadcasts?: number;
  /** Stream only: busy work per message in the consumer, ns. */
  workNs: number;
  /** Ping-pong only: true when each ping waited for the responder to be idle (the sparse regime). */
  sparse?: boolean;
  /** Node processes in the cell (peers). */
  processes: number;
  /** More processes than cores: the figures include CPU contention. */
  oversubscribed: boolean;
  /** 'one CPU each' (pinned with taskset) or 'scheduler' (oversubscribed, --no-pin, or no taskset). */
  placement?: string;
  elapsedMs: number | null;
  totals: Totals | null;
  /** Traps per register, summed over processes. */
  trapsByRegister: Record<string, { reads: number; writes: number }> | null;
  /** Set when the cell failed (timeout, a worker crashed, a check failed); figures are then null. */
  error?: string;
}

export interface MicroResult {
  name: string;
  p50Ns: number;
  p99Ns: number;
  // ---- additions
  meanNs: number;
  /** Operations per tinybench sample: per-op ns = sample time / batch. */
  batch: number;
  samples: number;
  description: string;
}

export interface BaselineResult {
  name: string;
  /** Round trip (both directions), µs: ping-pong baselines. */
  rttP50Us?: number | null;
  rttP99Us?: number | null;
  /** One-way messages per second. */
  msgsPerSec?: number | null;
  // ---- additions
  available: boolean;
  /** Why the baseline is unavailable (or a note on how it was measured). */
  reason?: string;
  messages?: number;
  interceptsPerMsg?: number | null;
  kernelCrossingsPerMsg?: number | null;
  /** 'one CPU each', 'same CPU' or 'scheduler'. */
  placement?: string;
  description: string;
}

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  availableParallelism: number;
  kernel: string;
  kernelVersion: string;
  platform: string;
  arch: string;
  node: string;
  v8: string;
  totalMemoryMiB: number;
  loadAverage: number[];
  date: string;
  ivshmemVersion: string;
  cc: string | null;
}

export interface BenchReport {
  machine: MachineInfo;
  options: ResolvedOptions;
  results: CellResult[];
  micro: MicroResult[];
  baselines: BaselineResult[];
  durationMs: number;
}

export interface BenchOptions {
  quick?: boolean;
  workloads?: readonly WorkloadName[];
  designs?: readonly DesignName[];
  /** Messages per cell, overriding the mode's defaults (ping-pong: one-way messages; broadcast: broadcasts). */
  messages?: number;
  producers?: readonly number[];
  peers?: readonly number[];
  workNs?: number;
  /** Per-cell timeout, ms. */
  timeoutMs?: number;
  micro?: boolean;
  baselines?: boolean;
  /** Ring slots per lane (power of two). */
  slots?: number;
  /** Ping-pong without waiting for the responder to be idle (the next ping from inside the handler). */
  backToBack?: boolean;
  /** One CPU per process when a cell has no more processes than CPUs (default true). */
  pin?: boolean;
  /** Round trips of the ping-pong baselines (default 4,000 with quick, else 20,000). */
  baselineRoundTrips?: number;
  /** Messages of the stream baselines (default 100,000 with quick, else 500,000). */
  baselineStreamMessages?: number;
  /** tinybench time budget per micro task, ms (default 150 with quick, else 1000). */
  microTimeMs?: number;
}

export interface ResolvedOptions {
  quick: boolean;
  workloads: WorkloadName[];
  designs: DesignName[];
  messages: Record<WorkloadName, number>;
  producers: number[];
  peers: number[];
  workNs: number;
  timeoutMs: number;
  micro: boolean;
  baselines: boolean;
  slots: number;
  backToBack: boolean;
  pin: boolean;
  /** tinybench time per micro task, ms. */
  microTimeMs: number;
  /** Round trips of the ping-pong baselines. */
  baselineRoundTrips: number;
  /** Messages of the stream baselines. */
  baselineStreamMessages: number;
}
