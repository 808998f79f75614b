/**
 * Baselines measured in the same run as the matrix, so that every figure can be read as a
 * ratio that survives a noisy machine:
 *
 * - c-eventfd-pingpong (and c-eventfd-epoll-pingpong): two C processes, the kernel's floor.
 * - node-unix-socket-pingpong / -stream: node:net between two worker processes.
 * - ivshmem-pingpong: the ping-pong workload over the library's own BitmaskDoorbell (no device
 *   model), the same code path as the matrix.
 * - ivshmem-channel-stream: 64-byte messages through ChannelProducer/ChannelConsumer.
 *
 * Ping-pong baselines report the full round trip (rttP50Us) and one-way messages per second
 * (2 per round trip), the units of the matrix's ping-pong cells (whose latency is round trip / 2).
 */
import { BUSY_POLL_MICROS } from './designs.js';
import { Histogram } from './histogram.js';
import { elapsedNs, sumCollected } from './matrix.js';
import { uniqueSocketPath } from './paths.js';
import type { PlanOutcome, Session } from './session.js';
import { layoutLanes } from './lane.js';
import type { BaselineResult, ResolvedOptions } from './types.js';

export const BASELINE_NAMES = [
  'c-eventfd-pingpong',
  'c-eventfd-epoll-pingpong',
  'c-eventfd-pingpong-same-cpu',
  'node-unix-socket-pingpong',
  'node-unix-socket-stream',
  'ivshmem-pingpong',
  'ivshmem-pingpong-busypoll',
  'ivshmem-channel-stream',
  'ivshmem-channel-stream-busypoll',
  'ivshmem-channel-stream-single',
  'ivshmem-channel-stream-busy-consumer',
  'js-ring-stream',
  'c-ring-stream',
  'ivshmem-channel-pingpong',
  'ivshmem-channel-pingpong-busypoll',
] as const;

const MESSAGE_BYTES = 64;
const PING_BYTES = 8;

const us = (ns: number | null): number | null => (ns === null ? null : Number((ns / 1000).toFixed(3)));

/** The baselines that run on a two-worker session. */
export const SESSION_BASELINES = [
  'node-unix-socket-pingpong',
  'node-unix-socket-stream',
  'ivshmem-pingpong',
  'ivshmem-pingpong-busypoll',
  'ivshmem-channel-stream',
  'ivshmem-channel-stream-busypoll',
  'ivshmem-channel-stream-single',
  'ivshmem-channel-stream-busy-consumer',
  'js-ring-stream',
  'ivshmem-channel-pingpong',
  'ivshmem-channel-pingpong-busypoll',
] as const;
export type SessionBaselineName = (typeof SESSION_BASELINES)[number];

type Step = { name: SessionBaselineName; run: () => Promise<BaselineResult> };

/** The busy-polling stream's window: long enough to ride out a scavenge or a stolen slice of
 * the other end (a few ms here) without falling asleep, where a wakeup costs 50–3000 µs. */
const STREAM_POLL_MICROS = 5000;

/** The channel streams: which calls, which ends poll, whether the consumer works per message. */
const CHANNEL_STREAMS: readonly {
  name: SessionBaselineName;
  api: 'batch' | 'single';
  busyPollMicros: number;
  workNs: 0 | 'option';
  describe: (workNs: number) => string;
}[] = [
  {
    name: 'ivshmem-channel-stream',
    api: 'batch',
    busyPollMicros: 0,
    workNs: 0,
    describe: () => `${MESSAGE_BYTES}-byte messages through ChannelProducer.trySendBatch (send() when full) / ChannelConsumer.readable + drain (64 KiB ring), two processes, both ends sleeping when they must wait`,
  },
  {
    name: 'ivshmem-channel-stream-busypoll',
    api: 'batch',
    busyPollMicros: STREAM_POLL_MICROS,
    workNs: 0,
    describe: () => `as ivshmem-channel-stream, both ends busy-polling for ${STREAM_POLL_MICROS} µs (busyPollMicros) before they sleep: the consumer for messages, the producer for space`,
  },
  {
    name: 'ivshmem-channel-stream-single',
    api: 'single',
    busyPollMicros: 0,
    workNs: 0,
    describe: () => `${MESSAGE_BYTES}-byte messages through ChannelProducer.send (awaited) / the ChannelConsumer async iterator (64 KiB ring), two processes`,
  },
  {
    name: 'ivshmem-channel-stream-busy-consumer',
    api: 'batch',
    busyPollMicros: 0,
    workNs: 'option',
    describe: (workNs) => `as ivshmem-channel-stream, the consumer busy for ${workNs} ns per message (--work-ns): the producer outruns it and waits for space, nobody polls; what the doorbells cost while the consumer is busy`,
  },
];

/** Runs one of the session baselines on `session` (two connected workers). */
export async function runSessionBaseline(name: SessionBaselineName, session: Session, options: ResolvedOptions, timeoutMs: number, epoch: bigint): Promise<BaselineResult> {
  const step = sessionSteps(session, options, timeoutMs, epoch).find((s) => s.name === name);
  if (step === undefined) throw new RangeError(`unknown baseline ${name}`);
  return step.run();
}

function sessionSteps(session: Session, options: ResolvedOptions, timeoutMs: number, epoch: bigint): Step[] {
  const rounds = options.baselineRoundTrips;
  const streamMessages = options.baselineStreamMessages;
  return [
    {
      name: 'node-unix-socket-pingpong',
      run: async () => {
        const path = uniqueSocketPath('net');
        const out = await session.run(
          {
            adapter: 'ivshmem',
            label: 'node-unix-socket-pingpong',
            roles: [
              { kind: 'net-server', path, mode: 'pingpong', messages: rounds, size: PING_BYTES },
              { kind: 'net-client', path, mode: 'pingpong', messages: rounds, size: PING_BYTES },
            ],
            prepareOrder: [0, 1],
          },
          timeoutMs,
          epoch,
        );
        const client = out.finished[1]!;
        const h = new Histogram();
        if (client.latency !== null) h.merge(client.latency);
        return {
          name: 'node-unix-socket-pingpong',
          available: true,
          rttP50Us: us(h.quantile(0.5)),
          rttP99Us: us(h.quantile(0.99)),
          msgsPerSec: Math.round((2 * rounds) / (elapsedNs([client]) / 1e9)),
          messages: 2 * rounds,
          description: `node:net over a UNIX socket between two processes, ${PING_BYTES}-byte message echoed, one in flight`,
        };
      },
    },
    {
      name: 'node-unix-socket-stream',
      run: async () => {
        const path = uniqueSocketPath('net');
        const out = await session.run(
          {
            adapter: 'ivshmem',
            label: 'node-unix-socket-stream',
            roles: [
              { kind: 'net-server', path, mode: 'stream', messages: streamMessages, size: MESSAGE_BYTES },
              { kind: 'net-client', path, mode: 'stream', messages: streamMessages, size: MESSAGE_BYTES },
            ],
            prepareOrder: [0, 1],
          },
          timeoutMs,
          epoch,
        );
        return {
          name: 'node-unix-socket-stream',
          available: true,
          msgsPerSec: Math.round(streamMessages / (elapsedNs(out.finished) / 1e9)),
          messages: streamMessages,
          description: `node:net over a UNIX socket between two processes, ${MESSAGE_BYTES}-byte messages, one socket.write() each (waiting for 'drain' when asked)`,
        };
      },
    },
    ...([false, true] as const).map((busyPoll) => {
      const name = busyPoll ? ('ivshmem-pingpong-busypoll' as const) : ('ivshmem-pingpong' as const);
      return {
        name,
        run: async () => {
          const lanes = layoutLanes(session.dataOffset, 2, 16, 1);
          const [ab, ba] = [lanes[0]!, lanes[1]!];
          const messages = 2 * rounds;
          const out = await session.run(
            {
              adapter: busyPoll ? 'ivshmem-busypoll' : 'ivshmem',
              label: name,
              roles: [
                // Back-to-back, as an application (and the other baselines) would reply.
                { kind: 'ping', out: ab, in: ba, other: session.ids[1]!, messages, sparse: false },
                { kind: 'pong', out: ba, in: ab, other: session.ids[0]!, messages, sparse: false },
              ],
            },
            timeoutMs,
            epoch,
          );
          return pingPongResult(name, out, messages, `the ping-pong workload over BitmaskDoorbell (ring + serve), no device model, two processes, back-to-back (the reply rung from inside the handler)${busyPoll ? `; receivers busy-poll for ${BUSY_POLL_MICROS} µs before sleeping` : ', receivers block at once'}`);
        },
      };
    }),
    ...CHANNEL_STREAMS.map((variant) => ({
      name: variant.name,
      run: async () => {
        const { api, busyPollMicros, workNs } = variant;
        const out = await session.run(
          {
            adapter: 'ivshmem',
            label: variant.name,
            roles: [
              { kind: 'channel-producer', offset: session.dataOffset, capacity: 65536, consumer: session.ids[1]!, messages: streamMessages, size: MESSAGE_BYTES, api, busyPollMicros },
              { kind: 'channel-consumer', offset: session.dataOffset, messages: streamMessages, api, busyPollMicros, workNs: workNs === 'option' ? options.workNs : 0 },
            ],
            prepareOrder: [0, 1],
          },
          timeoutMs,
          epoch,
        );
        const { totals } = sumCollected(out.collected);
        // The two directions apart (traps = signals made, injections = interrupts taken): the
        // consumer rung for data, and the producer rung for space.
        const [producer, consumer] = [out.collected[0]!.totals, out.collected[1]!.totals];
        const perMsg = (n: number): number => Number((n / streamMessages).toFixed(6));
        return {
          name: variant.name,
          available: true,
          msgsPerSec: Math.round(streamMessages / (elapsedNs(out.finished) / 1e9)),
          messages: streamMessages,
          interceptsPerMsg: perMsg(totals.intercepts),
          kernelCrossingsPerMsg: perMsg(totals.kernelCrossings),
          ...(producer !== null && consumer !== null
            ? { dataInterceptsPerMsg: perMsg(producer.traps + consumer.injections), spaceInterceptsPerMsg: perMsg(consumer.traps + producer.injections) }
            : {}),
          reason: 'intercepts = Doorbell signals + interrupts delivered, from the native counters (shared-memory clear)',
          description: variant.describe(options.workNs),
        };
      },
    })),
    {
      name: 'js-ring-stream',
      run: async () => {
        const out = await session.run(
          {
            adapter: 'ivshmem',
            label: 'js-ring-stream',
            roles: [
              { kind: 'ring-producer', offset: session.dataOffset, capacity: 65536, messages: streamMessages, size: MESSAGE_BYTES },
              { kind: 'ring-consumer', offset: session.dataOffset, capacity: 65536, messages: streamMessages },
            ],
            prepareOrder: [0, 1],
          },
          timeoutMs,
          epoch,
        );
        return {
          name: 'js-ring-stream',
          available: true,
          msgsPerSec: Math.round(streamMessages / (elapsedNs(out.finished) / 1e9)),
          messages: streamMessages,
          description: `the ceiling in JS: the channel's record format (${MESSAGE_BYTES}-byte payloads, 64 KiB) over the same SharedMemory, no library code, head published and tail stored once per batch, both ends spinning (bench/bare-ring.ts), two processes`,
        };
      },
    },
    ...([0, BUSY_POLL_MICROS] as const).map((busyPollMicros) => {
      const name = busyPollMicros === 0 ? ('ivshmem-channel-pingpong' as const) : ('ivshmem-channel-pingpong-busypoll' as const);
      return {
        name,
        run: async () => {
          const messages = 2 * rounds;
          const common = { offset: session.dataOffset, messages, size: PING_BYTES, busyPollMicros };
          const out = await session.run(
            {
              adapter: 'ivshmem',
              label: name,
              roles: [
                { kind: 'channel-ping', other: session.ids[1]!, ...common },
                { kind: 'channel-pong', other: session.ids[0]!, ...common },
              ],
              prepareOrder: [0, 1],
            },
            timeoutMs,
            epoch,
          );
          return pingPongResult(name, out, messages, `${PING_BYTES}-byte messages over openDuplex (4 KiB rings), one in flight: trySend, then readable + drain; the reply sent from inside the drain handler${busyPollMicros > 0 ? `; consumers busy-poll for ${busyPollMicros} µs before sleeping` : ', consumers sleep at once'}`);
        },
      };
    }),
  ];
}

/** A two-process ping-pong's figures: the ping side's samples are round trip / 2. */
function pingPongResult(name: SessionBaselineName, out: PlanOutcome, messages: number, description: string): BaselineResult {
  const ping = out.finished[0]!;
  const h = new Histogram();
  if (ping.latency !== null) h.merge(ping.latency);
  const { totals } = sumCollected(out.collected);
  const half50 = h.quantile(0.5);
  const half99 = h.quantile(0.99);
  return {
    name,
    available: true,
    rttP50Us: us(half50 === null ? null : 2 * half50),
    rttP99Us: us(half99 === null ? null : 2 * half99),
    msgsPerSec: Math.round(messages / (elapsedNs([ping]) / 1e9)),
    messages,
    interceptsPerMsg: Number((totals.intercepts / messages).toFixed(6)),
    kernelCrossingsPerMsg: Number((totals.kernelCrossings / messages).toFixed(6)),
    description,
  };
}

export function unavailable(name: string, reason: string): BaselineResult {
  return { name, available: false, reason, rttP50Us: null, rttP99Us: null, msgsPerSec: null, description: '' };
}
