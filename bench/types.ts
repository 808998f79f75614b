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
 * baseline, and `bitmask-busypoll` (the bitmask model, receiving with a busy poll; `bench --vm`).
 */
export type AdapterName = DesignName | 'bitmask-busypoll' | 'ivshmem' | 'ivshmem-busypoll';

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
  /** Channel streams: the intercepts of the data direction (producer rings consumer) and of
   * the space direction (consumer rings a producer that waits for space), per message. */
  dataInterceptsPerMsg?: number;
  spaceInterceptsPerMsg?: number;
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
  // ---- additions
  /** The workloads in a real VM (`--vm`, or the full run where a guest can boot); absent when not run. */
  vm?: VmReport;
}

// ------------------------------------------------------------------ in a real VM (bench --vm)

export const VM_WORKLOADS = ['ping-pong', 'stream-to-guest', 'stream-to-host', 'fan-in'] as const;
export type VmWorkloadName = (typeof VM_WORKLOADS)[number];

/** The designs stock QEMU can carry across the VM boundary. */
export const VM_DESIGNS = ['qemu', 'bitmask'] as const;
export type VmDesignName = (typeof VM_DESIGNS)[number];

/**
 * One direction of a VM cell: what the models counted and what an instrument that is not the
 * package's counted, for the same messages.
 *
 * - guest→host: Doorbell writes. `modelled`: the guest's device model (a trap per Doorbell
 *   write it makes); `measured`: QEMU's trace of MMIO writes to the device's BAR0 + 0xc (the
 *   device has `ioeventfd=off`, so every write reaches the traced handler).
 * - host→guest: MSI-X interrupts into the guest. `modelled`: the guest's device model (an
 *   injection per interrupt delivered to it); `measured`: the guest kernel's /proc/interrupts
 *   (the device's vfio-msix lines).
 */
export interface VmDirection {
  /** One-way messages that crossed in this direction. */
  messages: number;
  modelled: number;
  measured: number;
  instrument: 'qemu-trace' | 'guest-kernel';
  /** Per message; null when no message crossed this way. */
  modelledPerMsg: number | null;
  measuredPerMsg: number | null;
  /** modelled / measured (1 when both are 0; null when only measured is 0). */
  ratio: number | null;
  /** The senders' side in the package's counters: host→guest the host's eventfd writes; guest→host the guest's Doorbell stores. */
  senderSignals: number;
  /** The receivers' side: host→guest the host models' Doorbell traps (what the same sends would cost from a VM); guest→host the host peers' interrupts. */
  other: number;
  /** Bitmask: rings of the senders that found the bit already set (no signal at all). */
  suppressed: number;
}

export interface VmCellResult {
  workload: VmWorkloadName;
  design: VmDesignName;
  /** Which side's receiver polls its work for `busyPollMicros` before it sleeps ('none': both sleep on their interrupt). */
  busyPoll: 'none' | 'guest' | 'host';
  /** Host producers (fan-in), else 1. */
  producers: number;
  /** One-way messages delivered (ping-pong: both directions). */
  messages: number;
  elapsedMs: number | null;
  msgsPerSec: number | null;
  /** Ping-pong: the host's round trip to the guest and back, µs. */
  rttP50Us: number | null;
  rttP99Us: number | null;
  guestToHost: VmDirection | null;
  hostToGuest: VmDirection | null;
  error?: string;
}

/** A bare round trip host → guest → host on vector 0: the host rings, the guest's pong rings back. */
export interface VmLatency {
  /** 'node-pong' (GuestDevice in Node), 'c-pong' (bench/vm/c/vfio-pong.c, compiled by the bench). */
  name: string;
  available: boolean;
  reason?: string;
  rounds: number;
  rttP50Us: number | null;
  rttP99Us: number | null;
  description: string;
}

export interface VmReport {
  available: boolean;
  /** Why no guest ran (tools missing, boot failed). */
  reason?: string;
  /** 'tcg' (emulated: timings are not hardware timings, counts are exact) or 'kvm'. */
  accel: 'tcg' | 'kvm';
  guestKernel: string | null;
  /** QEMU start → the guest's script. */
  bootMs: number | null;
  /** The device line QEMU ran with. */
  device: string;
  busyPollMicros: number;
  cells: VmCellResult[];
  latency: VmLatency[];
  /** node-pong RTT p50 / c-pong RTT p50, same guest, same run. */
  nodeVsC: number | null;
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
  /** Messages of the stream baselines (default 100,000 with quick, else 2,000,000). */
  baselineStreamMessages?: number;
  /** tinybench time budget per micro task, ms (default 150 with quick, else 1000). */
  microTimeMs?: number;
  /** The workloads in a real VM: 'only' (`--vm`: nothing else), true, false; default: the full run where a guest can boot. */
  vm?: boolean | 'only';
  /** Fan-in producers of the VM part (default 2). */
  vmProducers?: number;
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
  // ---- additions
  /** Whether the VM part runs: 'only', true (after the rest), false. */
  vm: boolean | 'only';
  /** Messages per VM cell (ping-pong: one-way messages) and round trips of the VM latency runs. */
  vmMessages: Record<VmWorkloadName, number>;
  vmRoundTrips: number;
  vmProducers: number;
}
