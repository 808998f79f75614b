/**
 * The design-neutral workload driver (runs in the worker processes). Every role publishes its
 * work in a lane (lane.ts) and then calls the adapter's `ring`/`broadcast`; every receiving
 * role sleeps in the adapter's `serve(hasWork, handle)`. No role knows which design it runs:
 * the same code path for all of them.
 *
 * - ping / pong: two lanes, one message in flight; latency = round trip / 2. Sparse (the
 *   default): the initiator sends the next ping only once the responder's idle flag (in the
 *   shared memory, raised on the event-loop turn after its handler) is up, so that every
 *   message finds its receiver idle — the regime the seed's analysis is about. Back-to-back:
 *   the next ping goes out from inside the handler, and may arrive while the responder is
 *   still finishing the previous one.
 * - producer: publishes as fast as its lane has room, one ring per message; when the lane is
 *   full it polls for room (a few event-loop turns, then 1 ms sleeps), which costs no doorbell.
 * - consumer: takes every message of its lanes (fan-in: one lane per producer; broadcast: its
 *   own cursor in the one lane), records one-way latency (send time written in the message,
 *   queueing included), and does `workNs` of busy work per message.
 * - broadcaster: like a producer, but one lane read by every receiver and `broadcast` per message.
 */
import { setImmediate as immediate } from 'node:timers/promises';
import type { Endpoint } from '../lib/index.js';
import { spin, type Clock } from './clock.js';
import type { DesignAdapter } from './designs.js';
import { Histogram } from './histogram.js';
import { Lane, type LaneSpec } from './lane.js';
import type { Finished, RoleSpec } from './protocol.js';

export interface RoleContext {
  peer: Endpoint;
  adapter: DesignAdapter;
  clock: Clock;
}

/** A role set up and listening; `go` starts its part, `stop` ends its receive loop. */
export interface RunningRole {
  go(): Promise<Finished>;
  stop(): Promise<void>;
}

type DesignRole = Extract<RoleSpec, { kind: 'ping' | 'pong' | 'producer' | 'consumer' | 'broadcaster' }>;

export function isDesignRole(role: RoleSpec): role is DesignRole {
  return ['ping', 'pong', 'producer', 'consumer', 'broadcaster'].includes(role.kind);
}

export function startRole(ctx: RoleContext, spec: DesignRole): RunningRole {
  switch (spec.kind) {
    case 'ping':
      return pingRole(ctx, spec);
    case 'pong':
      return pongRole(ctx, spec);
    case 'producer':
      return producerRole(ctx, spec.lane, spec.messages, (a) => a.ring(spec.consumer));
    case 'broadcaster':
      return producerRole(ctx, spec.lane, spec.messages, (a) => a.broadcast(spec.targets));
    case 'consumer':
      return consumerRole(ctx, spec);
  }
}

/** A deferred completion that a receive loop's failure also settles. */
class Completion {
  readonly promise: Promise<Finished>;
  resolve!: (f: Finished) => void;
  reject!: (e: unknown) => void;
  settled = false;
  constructor() {
    this.promise = new Promise<Finished>((resolve, reject) => {
      this.resolve = (f) => {
        this.settled = true;
        resolve(f);
      };
      this.reject = (e) => {
        this.settled = true;
        reject(e);
      };
    });
    this.promise.catch(() => {}); // observed through go()
  }
}

/** Runs the adapter's receive loop; a failure rejects `completion` (and later `stop`). */
function serveLoop(ctx: RoleContext, hasWork: () => boolean, handle: () => void, completion: Completion): { stop(): Promise<void> } {
  const controller = new AbortController();
  const serving = ctx.adapter.serve(hasWork, handle, controller.signal);
  serving.catch((error: unknown) => completion.reject(error));
  return {
    async stop(): Promise<void> {
      controller.abort();
      await serving;
    },
  };
}

function pingRole(ctx: RoleContext, spec: Extract<RoleSpec, { kind: 'ping' }>): RunningRole {
  const buffer = ctx.peer.shm.buffer;
  const out = new Lane(buffer, spec.out);
  const inbound = new Lane(buffer, spec.in);
  const rounds = spec.messages / 2;
  const histogram = new Histogram();
  const completion = new Completion();
  const { clock, adapter } = ctx;
  let startNs = 0;
  let received = 0;
  const send = (): void => {
    out.publish(clock.now());
    adapter.ring(spec.other);
  };
  // Sparse: the next ping goes out from a later event-loop turn (this peer's own handler and
  // its clear are over) and only once the responder's idle flag is up (its handler and clear
  // are over too), so every message finds its receiver idle.
  const sendWhenIdle = (): void => {
    if (completion.settled) return;
    if (inbound.flag() === 0) {
      setImmediate(sendWhenIdle);
      return;
    }
    inbound.setFlag(0);
    send();
  };
  const handle = (): void => {
    const sentAt = inbound.take(0);
    const now = clock.now();
    histogram.record((now - sentAt) / 2);
    received++;
    if (received < rounds) {
      if (spec.sparse) setImmediate(sendWhenIdle);
      else send();
    } else if (received === rounds) {
      completion.resolve({ startNs, endNs: now, latency: histogram.toJSON(), count: received });
    } else {
      throw new Error(`ping: ${received} replies for ${rounds} pings`);
    }
  };
  const loop = serveLoop(ctx, () => inbound.available() > 0, handle, completion);
  return {
    go(): Promise<Finished> {
      startNs = clock.now();
      send();
      return completion.promise;
    },
    stop: () => loop.stop(),
  };
}

function pongRole(ctx: RoleContext, spec: Extract<RoleSpec, { kind: 'pong' }>): RunningRole {
  const buffer = ctx.peer.shm.buffer;
  const out = new Lane(buffer, spec.out);
  const inbound = new Lane(buffer, spec.in);
  const rounds = spec.messages / 2;
  const completion = new Completion();
  const { clock, adapter } = ctx;
  let answered = 0;
  // Set on the turn after the handler: by then the design's own after-handler steps (the
  // bitmask's clear and re-check, the 2010 unmask) have run.
  const markIdle = (): void => out.setFlag(1);
  const handle = (): void => {
    const sentAt = inbound.take(0);
    out.publish(sentAt); // the ping's send time goes back: the initiator measures the round trip
    adapter.ring(spec.other);
    answered++;
    if (spec.sparse) setImmediate(markIdle);
    if (answered === rounds) completion.resolve({ startNs: null, endNs: clock.now(), latency: null, count: answered });
    else if (answered > rounds) throw new Error(`pong: ${answered} pings for ${rounds} expected`);
  };
  const loop = serveLoop(ctx, () => inbound.available() > 0, handle, completion);
  return {
    go: () => completion.promise,
    stop: () => loop.stop(),
  };
}

/** Waits for room in a full lane without any doorbell: a few event-loop turns, then 1 ms sleeps. */
async function waitForRoom(attempt: number): Promise<void> {
  if (attempt < 8) await immediate();
  else await new Promise((resolve) => setTimeout(resolve, 1));
}

function producerRole(ctx: RoleContext, laneSpec: LaneSpec, messages: number, ring: (a: DesignAdapter) => void): RunningRole {
  const lane = new Lane(ctx.peer.shm.buffer, laneSpec);
  const { clock, adapter } = ctx;
  return {
    async go(): Promise<Finished> {
      const startNs = clock.now();
      let sent = 0;
      let attempt = 0;
      while (sent < messages) {
        const free = lane.free();
        if (free === 0) {
          await waitForRoom(attempt++);
          continue;
        }
        attempt = 0;
        const burst = Math.min(free, messages - sent);
        for (let i = 0; i < burst; i++) {
          lane.publish(clock.now());
          ring(adapter);
        }
        sent += burst;
      }
      return { startNs, endNs: clock.now(), latency: null, count: sent };
    },
    async stop(): Promise<void> {},
  };
}

function consumerRole(ctx: RoleContext, spec: Extract<RoleSpec, { kind: 'consumer' }>): RunningRole {
  const lanes = spec.lanes.map((l) => new Lane(ctx.peer.shm.buffer, l));
  const { clock } = ctx;
  const histogram = new Histogram();
  const completion = new Completion();
  const index = spec.index;
  const workNs = spec.workNs;
  let count = 0;
  if (spec.messages === 0) completion.resolve({ startNs: null, endNs: clock.now(), latency: [], count: 0 });
  const hasWork = (): boolean => {
    for (const lane of lanes) if (lane.available() > 0) return true;
    return false;
  };
  const handle = (): void => {
    for (const lane of lanes) {
      for (let n = lane.available(); n > 0; n--) {
        const sentAt = lane.take(index);
        const now = clock.now();
        histogram.record(now - sentAt);
        if (workNs > 0) spin(workNs);
        count++;
        if (count === spec.messages) {
          completion.resolve({ startNs: null, endNs: now, latency: histogram.toJSON(), count });
        } else if (count > spec.messages) {
          throw new Error(`consumer: received ${count} messages, ${spec.messages} were sent`);
        }
      }
    }
  };
  const loop = serveLoop(ctx, hasWork, handle, completion);
  return {
    go: () => completion.promise,
    stop: () => loop.stop(),
  };
}
