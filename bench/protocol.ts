/**
 * The IPC between the bench (parent) and its worker processes. Every command carries a
 * request number; the worker answers each with exactly one reply carrying the same number.
 *
 * A cell: `prepare` (build the adapter, lanes and receive loops; reply when listening) →
 * `go` to every worker (reply when its part is done: times and latencies) → `collect`
 * (settle, stop, reply with the device's stats()).
 */
import type { HistogramData } from './histogram.js';
import type { LaneSpec } from './lane.js';
import type { AdapterName, Totals } from './types.js';

export type RoleSpec =
  /**
   * Ping-pong initiator: sends `messages / 2` pings, each after the previous pong. `sparse`:
   * each ping waits until the responder is idle again (its flag in the shared memory).
   */
  | { kind: 'ping'; out: LaneSpec; in: LaneSpec; other: number; messages: number; sparse: boolean }
  /** Ping-pong responder: answers every ping; `sparse`: raises its idle flag once its handler is over. */
  | { kind: 'pong'; out: LaneSpec; in: LaneSpec; other: number; messages: number; sparse: boolean }
  /** Stream / fan-in producer: publishes `messages` into its lane, ringing the consumer per message. */
  | { kind: 'producer'; lane: LaneSpec; consumer: number; messages: number }
  /** Stream / fan-in consumer (index 0 of each lane) or broadcast receiver (index `index`). */
  | { kind: 'consumer'; lanes: LaneSpec[]; index: number; messages: number; workNs: number }
  /** Broadcast sender: publishes `messages` broadcasts into one lane, ringing every receiver. */
  | { kind: 'broadcaster'; lane: LaneSpec; targets: number[]; messages: number }
  // ---- baselines
  | { kind: 'net-server'; path: string; mode: 'pingpong' | 'stream'; messages: number; size: number }
  | { kind: 'net-client'; path: string; mode: 'pingpong' | 'stream'; messages: number; size: number }
  /** Channel stream ends; `busyPollMicros` of each end (0: sleep at once), `workNs` of busy work per message in the consumer. */
  | { kind: 'channel-producer'; offset: number; capacity: number; consumer: number; messages: number; size: number; api?: ChannelApi; busyPollMicros?: number }
  | { kind: 'channel-consumer'; offset: number; messages: number; api?: ChannelApi; busyPollMicros?: number; workNs?: number }
  /** The bare ring (no library code on the path): the channel's record format over the mapping, both ends spinning. */
  | { kind: 'ring-producer'; offset: number; capacity: number; messages: number; size: number }
  | { kind: 'ring-consumer'; offset: number; capacity: number; messages: number }
  /** Channel ping-pong over openDuplex: `messages` one-way messages (2 per round trip). */
  | { kind: 'channel-ping' | 'channel-pong'; offset: number; other: number; messages: number; size: number; busyPollMicros: number };

/** 'batch': trySendBatch + drain/readable (the fast paths); 'single': send() + the async iterator. */
export type ChannelApi = 'batch' | 'single';

export type RoleKind = RoleSpec['kind'];

export interface Prepare {
  role: RoleSpec;
  /** Device adapter (not used by the net-* and channel-* roles). */
  adapter: AdapterName;
  /** process.hrtime.bigint() of the parent at the start of the run, as a decimal string: the shared clock's zero. */
  epoch: string;
}

export type Command =
  | { type: 'connect'; req: number; socketPath: string }
  | { type: 'know'; req: number; ids: number[] }
  | ({ type: 'prepare'; req: number } & Prepare)
  | { type: 'go'; req: number }
  | { type: 'collect'; req: number }
  | { type: 'disconnect'; req: number }
  | { type: 'exit' };

/** What a worker reports when its part of a cell is done. */
export interface Finished {
  /**
   * ns since the epoch (CLOCK_MONOTONIC, the same clock in every process) when this role
   * started sending; null for roles that only receive (their first message may even arrive
   * before their own `go`).
   */
  startNs: number | null;
  endNs: number;
  /** Latency samples (ns): ping: round trip / 2; consumer: one-way. */
  latency: HistogramData | null;
  /** Round trips (ping) or messages (consumer, net-client) measured. */
  count: number;
  /** Free-form numbers a role adds (e.g. the C-like RTT percentiles of a baseline). */
  extra?: Record<string, number>;
}

export interface Collected {
  /** The device model's stats() (or the native counters' equivalent), since `go`. Null for net-* roles. */
  totals: Totals | null;
  trapsByRegister: Record<string, { reads: number; writes: number }> | null;
  /** Counts beside the model's over the cell (a guest: the kernel's MSI-X interrupts, the device's native Doorbell stores). */
  measured?: Record<string, number>;
}

export interface Connected {
  id: number;
  pid: number;
}

export type Reply =
  | { type: 'reply'; req: number; ok: true; data: unknown }
  | { type: 'reply'; req: number; ok: false; error: string }
  /** Sent once at startup, before any command. */
  | { type: 'hello'; pid: number };
