/** Defaults of the two modes (full and --quick), and validation of what the caller chose. */
import { DESIGNS, VM_WORKLOADS, WORKLOADS, type BenchOptions, type DesignName, type ResolvedOptions, type VmWorkloadName, type WorkloadName } from './types.js';

/** Messages per cell. Ping-pong: one-way messages (2 per round trip); broadcast: broadcasts. */
export const QUICK_MESSAGES: Record<WorkloadName, number> = {
  'ping-pong': 4_000,
  stream: 50_000,
  'fan-in': 50_000,
  broadcast: 5_000,
};

export const FULL_MESSAGES: Record<WorkloadName, number> = {
  'ping-pong': 20_000,
  stream: 200_000,
  'fan-in': 200_000,
  broadcast: 20_000,
};

/** Messages per cell of the VM part: under TCG a Doorbell write costs tens of µs, so fewer than on the host. */
export const VM_QUICK_MESSAGES: Record<VmWorkloadName, number> = { 'ping-pong': 1_000, 'stream-to-guest': 10_000, 'stream-to-host': 10_000, 'fan-in': 10_000 };
export const VM_FULL_MESSAGES: Record<VmWorkloadName, number> = { 'ping-pong': 4_000, 'stream-to-guest': 50_000, 'stream-to-host': 50_000, 'fan-in': 40_000 };
export const DEFAULT_VM_PRODUCERS = 2;

export const DEFAULT_PRODUCERS = [1, 2, 4, 8];
export const DEFAULT_PEERS = [2, 4, 8];
/** Busy work per message in the stream consumer. */
export const DEFAULT_WORK_NS = 1000;
export const DEFAULT_SLOTS = 4096;
/** The most peers a cell may use (the 2010 layout addresses 255 IDs; keep it sane on 2 cores). */
export const MAX_PEERS_PER_CELL = 32;

export function resolveOptions(options: BenchOptions = {}): ResolvedOptions {
  const quick = options.quick === true;
  const base = quick ? QUICK_MESSAGES : FULL_MESSAGES;
  const workloads = unique(options.workloads ?? WORKLOADS, WORKLOADS, 'workload');
  const designs = unique(options.designs ?? DESIGNS, DESIGNS, 'design');
  const messages = { ...base };
  if (options.messages !== undefined) {
    positiveInteger('messages', options.messages);
    for (const w of WORKLOADS) messages[w] = options.messages;
  }
  // A round trip is two messages: ping-pong needs an even count.
  messages['ping-pong'] = Math.max(2, messages['ping-pong'] - (messages['ping-pong'] % 2));
  const producers = counts('producers', options.producers ?? DEFAULT_PRODUCERS, 1, MAX_PEERS_PER_CELL - 1);
  const peers = counts('peers', options.peers ?? DEFAULT_PEERS, 1, MAX_PEERS_PER_CELL - 1);
  const workNs = options.workNs ?? DEFAULT_WORK_NS;
  if (!Number.isSafeInteger(workNs) || workNs < 0 || workNs > 10_000_000) throw new RangeError(`workNs must be 0..10000000, got ${workNs}`);
  const slots = options.slots ?? DEFAULT_SLOTS;
  if (!Number.isSafeInteger(slots) || slots < 2 || slots > 1 << 16 || (slots & (slots - 1)) !== 0) {
    throw new RangeError(`slots must be a power of two from 2 to 65536, got ${slots}`);
  }
  const timeoutMs = options.timeoutMs ?? (quick ? 20_000 : 120_000);
  positiveInteger('timeoutMs', timeoutMs);
  const vmMessages = { ...(quick ? VM_QUICK_MESSAGES : VM_FULL_MESSAGES) };
  if (options.messages !== undefined) for (const w of VM_WORKLOADS) vmMessages[w] = options.messages;
  vmMessages['ping-pong'] = Math.max(2, vmMessages['ping-pong'] - (vmMessages['ping-pong'] % 2));
  const vm = options.vm ?? !quick;
  if (vm !== true && vm !== false && vm !== 'only') throw new RangeError(`vm must be true, false or 'only', got ${String(vm)}`);
  return {
    quick,
    workloads,
    designs,
    messages,
    producers,
    peers,
    workNs,
    timeoutMs,
    micro: options.micro ?? true,
    baselines: options.baselines ?? true,
    slots,
    backToBack: options.backToBack ?? false,
    pin: options.pin ?? true,
    microTimeMs: positive('microTimeMs', options.microTimeMs ?? (quick ? 150 : 1000)),
    baselineRoundTrips: positive('baselineRoundTrips', options.baselineRoundTrips ?? (quick ? 4_000 : 20_000)),
    baselineStreamMessages: positive('baselineStreamMessages', options.baselineStreamMessages ?? (quick ? 100_000 : 2_000_000)),
    vm,
    vmMessages,
    vmRoundTrips: quick ? 500 : 2_000,
    vmProducers: counts('vmProducers', [options.vmProducers ?? DEFAULT_VM_PRODUCERS], 1, MAX_PEERS_PER_CELL - 1)[0]!,
  };
}

function unique<T extends string>(chosen: readonly T[], all: readonly T[], what: string): T[] {
  for (const c of chosen) {
    if (!all.includes(c)) throw new RangeError(`unknown ${what} '${c}' (one of: ${all.join(', ')})`);
  }
  // Matrix order, whatever order they were given in.
  return all.filter((a) => chosen.includes(a));
}

function counts(what: string, list: readonly number[], min: number, max: number): number[] {
  if (list.length === 0) throw new RangeError(`${what}: at least one count is needed`);
  for (const n of list) {
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new RangeError(`${what} must be whole numbers from ${min} to ${max}, got ${n}`);
  }
  return [...new Set(list)].sort((a, b) => a - b);
}

function positive(what: string, n: number): number {
  positiveInteger(what, n);
  return n;
}

function positiveInteger(what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`${what} must be a positive whole number, got ${n}`);
}

export function isWorkload(name: string): name is WorkloadName {
  return (WORKLOADS as readonly string[]).includes(name);
}

export function isDesign(name: string): name is DesignName {
  return (DESIGNS as readonly string[]).includes(name);
}
