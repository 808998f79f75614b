/**
 * Ordering and integrity across processes. A producer child sends 10^6 messages of seeded random
 * sizes (0 … maxMessage) through a 4096-byte ring, so that the ring wraps, pads and fills all
 * the time: the size plan (test/fixtures/channel/common.mjs) aims records at the exact end of
 * the data, one byte past it (a pad), and mixes in empty, maximal and sub-header messages. Each
 * message carries its sequence number and a checksum of its payload; the consumer runs the same
 * plan in lockstep and checks every length, sequence number and checksum, and the total count.
 *
 * Variants: send() + the zero-copy iterator (consumer here, 10^6 messages); trySend() +
 * messages({ copy: true }) (consumer child, copies kept and re-checked later; 500,000);
 * sendBatch() + messages() with the free-running indices starting just below 2^32 (they wrap
 * mid-run; 500,000); trySendBatch() + the iterator (consumer child, sizes uniform up to the
 * maximum; 250,000). All four also pass at 10^6 each, but take ~45 s together on 2 cores; the
 * smaller counts keep the file near 20 s. Each prints messages/s.
 */
import { describe, expect, it } from 'vitest';
import { ChannelConsumer, createChannel, type InterruptCounters, type Peer, type PeerServer } from '../../lib/index.js';
import { consumeAll, Verifier, type ConsumeMode, type PlanStats, type SizeProfile } from '../fixtures/channel/common.mjs';
import { LONG_WAIT_MS, within } from '../helpers/wait.js';
import { rate, report, startChild, useResources } from './helpers.js';

const CAPACITY = 4096;
const MAX = CAPACITY / 2 - 8;

const res = useResources();

interface Variant {
  name: string;
  count: number;
  producerMode: 'send' | 'trySend' | 'sendBatch' | 'trySendBatch';
  consumer: 'here' | 'child';
  consumeMode: ConsumeMode;
  profile?: SizeProfile;
  /** The free-running head and tail to start from (default 0). */
  start?: number;
  keepCopies?: number;
  seed: number;
}

interface ProduceReply {
  sent: number;
  bytes: number;
  plan: PlanStats;
  trySendFalse: number;
  batches: number;
  elapsedMs: number;
  counters: InterruptCounters;
  head: number;
  planHead: number;
}

function setIndices(peer: Peer, offset: number, start: number): void {
  const words = new Uint32Array(peer.shm.buffer, offset, 64);
  Atomics.store(words, 16, start >>> 0); // head
  Atomics.store(words, 32, start >>> 0); // tail
}

async function runVariant(v: Variant): Promise<{ produced: ProduceReply; received: number; elapsedMs: number }> {
  const server: PeerServer = res.listen('integrity');
  const here = await res.connect(server);
  const producer = await startChild('producer.mjs', server, 'producer');
  const offset = server.dataOffset;
  const start = v.start ?? 0;
  const profile = v.profile ?? 'small';
  const produceCommand = { cmd: 'produce', offset, count: v.count, seed: v.seed, mode: v.producerMode, profile };

  let received: number;
  let elapsedMs: number;
  let produced: ProduceReply;
  if (v.consumer === 'here') {
    await here.waitForPeer(producer.id);
    createChannel(here, { offset, capacity: CAPACITY, producer: producer.id, consumer: here.id });
    setIndices(here, offset, start);
    const consumer = res.track(new ChannelConsumer(here, offset));
    const verifier = new Verifier(v.seed, CAPACITY, start, profile);
    const consuming = consumeAll(consumer, {
      verifiers: new Map([[producer.id, verifier]]),
      mode: v.consumeMode,
      shmBuffer: here.shm.buffer,
      ...(v.keepCopies === undefined ? {} : { keepCopies: v.keepCopies }),
    });
    const [result, reply] = await Promise.all([
      within(consuming, `the consumer to read ${v.count} messages`, LONG_WAIT_MS),
      producer.request({ ...produceCommand, consumer: here.id }),
    ]);
    expect(result.failure).toBeNull();
    expect(result.error).toBeNull();
    expect(result.received).toBe(v.count);
    expect(result.perProducer[producer.id]).toBe(v.count);
    expect(verifier.expected).toBe(v.count);
    received = result.received;
    elapsedMs = result.elapsedMs;
    produced = reply as unknown as ProduceReply;
  } else {
    const consumerChild = await startChild('consumer.mjs', server, 'consumer');
    createChannel(here, { offset, capacity: CAPACITY, producer: producer.id, consumer: consumerChild.id });
    setIndices(here, offset, start);
    const consuming = consumerChild.request({
      cmd: 'consume',
      offsets: [offset],
      producers: [{ id: producer.id, seed: v.seed, profile }],
      mode: v.consumeMode,
      keepCopies: v.keepCopies ?? 0,
    });
    await consumerChild.waitForType('consuming');
    const [result, reply] = await Promise.all([consuming, producer.request({ ...produceCommand, consumer: consumerChild.id })]);
    expect(result.failure).toBeNull();
    expect(result.error).toBeNull();
    expect(result.received).toBe(v.count);
    expect(result.perProducer[producer.id]).toBe(v.count);
    received = result.received as number;
    elapsedMs = result.elapsedMs as number;
    produced = reply as unknown as ProduceReply;
  }

  expect(produced.sent).toBe(v.count);
  // The plan's simulation of the index (records, pads) is exactly what the producer published.
  expect(produced.head).toBe(produced.planHead);
  // Every edge case happened many times over.
  const st = produced.plan;
  const many = Math.min(1000, v.count / 200);
  expect(st.exactEnds).toBeGreaterThan(many);
  expect(st.pads).toBeGreaterThan(many);
  expect(st.empty).toBeGreaterThan(many);
  expect(st.maximal).toBeGreaterThan(many);
  expect(st.short).toBeGreaterThan(many);
  const c = produced.counters;
  report(
    `${v.name}: ${v.count.toLocaleString('en-US')} messages (${(produced.bytes / 2 ** 20).toFixed(0)} MiB) in ${elapsedMs.toFixed(0)} ms: ` +
      `${rate(received, elapsedMs)}; exact ends ${st.exactEnds}, pads ${st.pads}, empty ${st.empty}, maximal ${st.maximal}; ` +
      `trySend false ${produced.trySendFalse}, batches ${produced.batches}; producer rings ${c.rings}, suppressed ${c.suppressed} ` +
      `(${((100 * c.suppressed) / Math.max(1, c.rings)).toFixed(1)}%), eventfd writes ${c.eventfdWrites}, wakeups ${c.wakeups}`,
  );
  return { produced, received, elapsedMs };
}

describe('up to 10^6 messages across processes through a 4096-byte ring', () => {
  it('send() → zero-copy iterator: strictly consecutive, every checksum, the full count', { timeout: 120_000 }, async () => {
    await runVariant({ name: 'send → iterator', count: 1_000_000, producerMode: 'send', consumer: 'here', consumeMode: 'iterate', seed: 11 });
  });

  it('trySend() (send() when full) → messages({ copy: true }) in a child; copies stay valid', { timeout: 120_000 }, async () => {
    await runVariant({
      name: 'trySend → copy',
      count: 500_000,
      producerMode: 'trySend',
      consumer: 'child',
      consumeMode: 'copy',
      keepCopies: 64,
      seed: 22,
    });
  });

  it('sendBatch() → messages(), with head and tail starting just below 2^32 (they wrap mid-run)', { timeout: 120_000 }, async () => {
    const start = 2 ** 32 - 200 * 1024 - 8 * 37; // not a multiple of the capacity: starts mid-ring
    const { produced } = await runVariant({
      name: 'sendBatch → messages() (indices wrap 2^32)',
      count: 500_000,
      producerMode: 'sendBatch',
      consumer: 'here',
      consumeMode: 'messages',
      start,
      seed: 33,
    });
    // The head wrapped past 2^32 (bytes published > 2^32 - start).
    expect(produced.head).toBeLessThan(start);
    expect(produced.batches).toBeGreaterThan(0);
  });

  it('trySendBatch() (send() when short) → iterator in a child, uniform sizes up to the maximum', { timeout: 120_000 }, async () => {
    await runVariant({
      name: 'trySendBatch → iterator (uniform sizes)',
      count: 250_000,
      producerMode: 'trySendBatch',
      consumer: 'child',
      consumeMode: 'iterate',
      profile: 'uniform',
      seed: 44,
    });
  });
});

it('the size plan reaches every size from 0 to maxMessage', () => {
  const seen = new Uint8Array(MAX + 1);
  const v = new Verifier(5, CAPACITY, 0, 'uniform');
  for (let i = 0; i < 200_000; i++) seen[v.plan.next()] = 1;
  expect(seen.every((x) => x === 1)).toBe(true);
});
