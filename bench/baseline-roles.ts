/**
 * The worker-side halves of the two-process baselines:
 *
 * - net-server / net-client: Node's own UNIX-socket (node:net) ping-pong (one `size`-byte
 *   message in flight, echoed) and stream (`size`-byte messages, one socket.write each,
 *   waiting for 'drain' when the socket says so; the server counts bytes).
 * - channel-producer / channel-consumer: 64-byte messages through the library's
 *   ChannelProducer / ChannelConsumer (shared-memory rings over the bitmask doorbell), counted
 *   from the native counters (a signal is a Doorbell write, an interrupt an injection).
 */
import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { unlinkSync } from 'node:fs';
import { ChannelConsumer, ChannelProducer, createChannel, openDuplex, type Duplex, type InterruptCounters, type Peer } from '../lib/index.js';
import { ringConsumer, ringProducer } from './bare-ring.js';
import { spin, type Clock } from './clock.js';
import { nativeTotals } from './designs.js';
import { Histogram } from './histogram.js';
import type { Collected, Finished, RoleSpec } from './protocol.js';

export interface BaselineRole {
  /** Counting starts here (end of prepare: what set-up cost is not counted). */
  arm(): void;
  go(): Promise<Finished>;
  /** Ends the role; returns what it counted (null totals for the net roles). */
  stop(): Promise<Collected>;
}

type NetRole = Extract<RoleSpec, { kind: 'net-server' | 'net-client' }>;
type ChannelRole = Extract<RoleSpec, { kind: 'channel-producer' | 'channel-consumer' | 'ring-producer' | 'ring-consumer' | 'channel-ping' | 'channel-pong' }>;

export function isBaselineRole(role: RoleSpec): role is NetRole | ChannelRole {
  return ['net-server', 'net-client', 'channel-producer', 'channel-consumer', 'ring-producer', 'ring-consumer', 'channel-ping', 'channel-pong'].includes(role.kind);
}

export async function startBaselineRole(spec: NetRole | ChannelRole, clock: Clock, peer: Peer | null): Promise<BaselineRole> {
  if (spec.kind === 'ring-producer' || spec.kind === 'ring-consumer' || spec.kind === 'channel-ping' || spec.kind === 'channel-pong') {
    if (peer === null) throw new Error(`${spec.kind} needs a connected peer`);
    if (spec.kind === 'ring-producer') return ringProducer(spec, clock, peer.shm.buffer);
    if (spec.kind === 'ring-consumer') return ringConsumer(spec, clock, peer.shm.buffer);
    return channelPingPong(spec, clock, peer);
  }
  switch (spec.kind) {
    case 'net-server':
      return netServer(spec, clock);
    case 'net-client':
      return netClient(spec, clock);
    case 'channel-producer':
    case 'channel-consumer':
      if (peer === null) throw new Error(`${spec.kind} needs a connected peer`);
      return spec.kind === 'channel-producer' ? channelProducer(spec, clock, peer) : channelConsumer(spec, clock, peer);
  }
}

const NO_COUNTS: Collected = { totals: null, trapsByRegister: null };

async function netServer(spec: Extract<RoleSpec, { kind: 'net-server' }>, clock: Clock): Promise<BaselineRole> {
  const expected = spec.messages * spec.size;
  let received = 0;
  let resolveDone!: (f: Finished) => void;
  let rejectDone!: (e: unknown) => void;
  const done = new Promise<Finished>((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  done.catch(() => {});
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', (error) => rejectDone(error));
    socket.on('data', (chunk: Buffer) => {
      if (spec.mode === 'pingpong') socket.write(chunk);
      received += chunk.byteLength;
      if (received >= expected) resolveDone({ startNs: null, endNs: clock.now(), latency: null, count: received / spec.size });
    });
  });
  try {
    unlinkSync(spec.path);
  } catch {
    // not there
  }
  server.listen(spec.path);
  await once(server, 'listening');
  return {
    arm(): void {},
    go: () => done,
    async stop(): Promise<Collected> {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      return NO_COUNTS;
    },
  };
}

async function netClient(spec: Extract<RoleSpec, { kind: 'net-client' }>, clock: Clock): Promise<BaselineRole> {
  const socket = createConnection(spec.path);
  await once(socket, 'connect');
  const message = Buffer.alloc(spec.size, 0x5a);
  return {
    arm(): void {},
    async go(): Promise<Finished> {
      const startNs = clock.now();
      if (spec.mode === 'stream') {
        for (let i = 0; i < spec.messages; i++) {
          if (!socket.write(message)) await once(socket, 'drain');
        }
        return { startNs, endNs: clock.now(), latency: null, count: spec.messages };
      }
      // Ping-pong: one message in flight; a reply may arrive in pieces.
      const histogram = new Histogram();
      return new Promise<Finished>((resolve, reject) => {
        let got = 0;
        let rounds = 0;
        let sentAt = clock.now();
        socket.on('error', reject);
        socket.on('data', (chunk: Buffer) => {
          got += chunk.byteLength;
          if (got < spec.size) return;
          got -= spec.size;
          const now = clock.now();
          histogram.record(now - sentAt); // the full round trip
          rounds++;
          if (rounds === spec.messages) {
            resolve({ startNs, endNs: now, latency: histogram.toJSON(), count: rounds });
            return;
          }
          sentAt = clock.now();
          socket.write(message);
        });
        socket.write(message);
      });
    },
    async stop(): Promise<Collected> {
      socket.destroy();
      return NO_COUNTS;
    },
  };
}

async function channelProducer(spec: Extract<RoleSpec, { kind: 'channel-producer' }>, clock: Clock, peer: Peer): Promise<BaselineRole> {
  createChannel(peer, { offset: spec.offset, capacity: spec.capacity, producer: peer.id, consumer: spec.consumer });
  const producer = new ChannelProducer(peer, spec.offset, { busyPollMicros: spec.busyPollMicros ?? 0 });
  const message = new Uint8Array(spec.size).fill(0x5a);
  let base: InterruptCounters = peer.counters();
  return {
    arm(): void {
      base = peer.counters();
    },
    async go(): Promise<Finished> {
      const startNs = clock.now();
      if (spec.api === 'single') {
        for (let i = 0; i < spec.messages; i++) await producer.send(message);
      } else {
        // As many as fit, one publication each; wait for space only when none fit.
        const batch = new Array<Uint8Array>(1024).fill(message);
        for (let left = spec.messages; left > 0; ) {
          const sent = producer.trySendBatch(batch, batch.length - Math.min(left, batch.length));
          if (sent > 0) left -= sent;
          else {
            await producer.send(message);
            left--;
          }
        }
      }
      return { startNs, endNs: clock.now(), latency: null, count: spec.messages };
    },
    async stop(): Promise<Collected> {
      const totals = nativeTotals(peer.counters(), base);
      producer.close();
      return { totals, trapsByRegister: null };
    },
  };
}

async function channelConsumer(spec: Extract<RoleSpec, { kind: 'channel-consumer' }>, clock: Clock, peer: Peer): Promise<BaselineRole> {
  const consumer = new ChannelConsumer(peer, spec.offset, { busyPollMicros: spec.busyPollMicros ?? 0 });
  const workNs = spec.workNs ?? 0;
  let base: InterruptCounters = peer.counters();
  let count = 0;
  let resolveDone!: (f: Finished) => void;
  let rejectDone!: (e: unknown) => void;
  const done = new Promise<Finished>((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  done.catch(() => {});
  const reading = (async () => {
    if (spec.api === 'single') {
      for await (const { data } of consumer) {
        if (data.byteLength === 0) throw new Error('an empty channel message');
        count++;
        if (count === spec.messages) resolveDone({ startNs: null, endNs: clock.now(), latency: null, count });
      }
      return;
    }
    const handle = (_data: Uint8Array, _offset: number, length: number): void => {
      if (length === 0) throw new Error('an empty channel message');
      if (workNs > 0) spin(workNs);
      count++;
    };
    while (await consumer.readable()) {
      consumer.drain(handle);
      if (count >= spec.messages) resolveDone({ startNs: null, endNs: clock.now(), latency: null, count });
    }
  })();
  reading.catch((error: unknown) => rejectDone(error));
  return {
    arm(): void {
      base = peer.counters();
    },
    go: () => done,
    async stop(): Promise<Collected> {
      const totals = nativeTotals(peer.counters(), base);
      consumer.close();
      await reading.catch(() => {});
      return { totals, trapsByRegister: null };
    },
  };
}

/**
 * Channel ping-pong over openDuplex: the ping side sends `size` bytes and waits for the echo
 * (readable + drain), `messages / 2` times; the pong side echoes from inside its drain handler.
 * Latency = round trip / 2, as the doorbell ping-pong.
 */
async function channelPingPong(spec: Extract<RoleSpec, { kind: 'channel-ping' | 'channel-pong' }>, clock: Clock, peer: Peer): Promise<BaselineRole> {
  const duplex: Duplex = await openDuplex(peer, spec.other, { offset: spec.offset, capacity: 4096, timeout: 10_000, busyPollMicros: spec.busyPollMicros });
  const { producer, consumer: reader } = duplex;
  const message = new Uint8Array(spec.size).fill(0x5a);
  const rounds = spec.messages / 2;
  let base: InterruptCounters = peer.counters();
  const echo = (data: Uint8Array, offset: number, length: number): void => {
    if (!producer.trySend(data.subarray(offset, offset + length))) throw new Error('the reply ring is full');
  };
  let got = 0;
  const count = (): void => {
    got++;
  };
  return {
    arm(): void {
      base = peer.counters();
    },
    async go(): Promise<Finished> {
      if (spec.kind === 'channel-pong') {
        let echoed = 0;
        while (echoed < rounds && (await reader.readable())) echoed += reader.drain(echo);
        return { startNs: null, endNs: clock.now(), latency: null, count: echoed };
      }
      const histogram = new Histogram();
      const startNs = clock.now();
      for (let i = 0; i < rounds; i++) {
        const sentAt = clock.now();
        producer.trySend(message);
        got = 0;
        while (got === 0) {
          if (!(await reader.readable())) throw new Error('the pong side closed');
          reader.drain(count);
        }
        histogram.record((clock.now() - sentAt) / 2);
      }
      return { startNs, endNs: clock.now(), latency: histogram.toJSON(), count: rounds };
    },
    async stop(): Promise<Collected> {
      const totals = nativeTotals(peer.counters(), base);
      duplex.close();
      return { totals, trapsByRegister: null };
    },
  };
}
