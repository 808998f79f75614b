/**
 * Fan-in: 4 producer processes, one consumer here. createFanIn() lays out one 4096-byte ring per
 * producer; one ChannelConsumer reads them all (`new ChannelConsumer(peer, offsets)`), woken
 * through its one pending bit. Every message of every producer must arrive, each producer's in
 * its own order (checked per `from`), and the iteration must end normally once all four closed.
 *
 * One doorbell bit for the consumer: it has one vector, and every 0→1 edge any producer makes
 * (`signals`) needs the consumer to have cleared the bit before (`acks`), so the producers'
 * edges together never exceed the consumer's clears + 1. The suppressed fraction (rings that
 * found the bit already set and cost nothing) is printed.
 */
import { expect, it } from 'vitest';
import { channelBytes, ChannelConsumer, createFanIn, type InterruptCounters } from '../../lib/index.js';
import { consumeAll, Verifier } from '../fixtures/channel/common.mjs';
import type { JsonChild } from '../helpers/children.js';
import { sumCounters } from '../helpers/resources.js';
import { LONG_WAIT_MS, within } from '../helpers/wait.js';
import { rate, report, startChild, useResources } from './helpers.js';

const res = useResources();

const PRODUCERS = 4;
const PER_PRODUCER = 250_000;
const CAPACITY = 4096;

it('4 producer processes → one consumer: all messages, per-producer order, one doorbell bit', { timeout: 180_000 }, async () => {
  const server = res.listen('fanin');
  const here = await res.connect(server);
  const producers: JsonChild[] = [];
  for (let i = 0; i < PRODUCERS; i++) producers.push(await startChild('producer.mjs', server, `producer #${i}`));
  for (const p of producers) await here.waitForPeer(p.id);
  const ids = producers.map((p) => p.id);

  const offsets = createFanIn(here, { offset: server.dataOffset, capacity: CAPACITY, producers: ids, consumer: here.id });
  expect(offsets).toEqual(ids.map((_, i) => server.dataOffset + i * channelBytes(CAPACITY)));

  const consumer = res.track(new ChannelConsumer(here, offsets));
  const left: number[] = [];
  consumer.on('producer-left', (id) => left.push(id));

  // Track the arrival order of producers, to see that the rings were interleaved.
  const order: number[] = [];
  const verifiers = new Map<number, Verifier>();
  ids.forEach((id, i) => {
    const v = new Verifier(100 + i, CAPACITY, 0, 'small');
    const check = v.check.bind(v);
    v.check = (data: Uint8Array): string | null => {
      order.push(id);
      return check(data);
    };
    verifiers.set(id, v);
  });

  here.resetCounters();
  const consuming = consumeAll(consumer, { verifiers, mode: 'iterate', shmBuffer: here.shm.buffer });
  const modes = ['send', 'sendBatch', 'trySend', 'trySendBatch'];
  const replies = await Promise.all(
    producers.map((p, i) =>
      p.request({ cmd: 'produce', offset: offsets[i], consumer: here.id, count: PER_PRODUCER, seed: 100 + i, mode: modes[i % modes.length], profile: 'small' }),
    ),
  );
  const result = await within(consuming, 'the consumer to read every producer to its end', LONG_WAIT_MS);
  const mine = here.counters();

  expect(result.failure).toBeNull();
  expect(result.error).toBeNull(); // ended normally: every producer closed its ring
  expect(result.received).toBe(PRODUCERS * PER_PRODUCER);
  for (const id of ids) {
    expect(result.perProducer[id]).toBe(PER_PRODUCER);
    expect(verifiers.get(id)!.expected).toBe(PER_PRODUCER);
  }
  for (const r of replies) expect(r.sent).toBe(PER_PRODUCER);
  expect(left).toEqual([]);

  // The rings were served interleaved, not one after another.
  let switches = 0;
  for (let i = 1; i < order.length; i++) if (order[i] !== order[i - 1]) switches++;
  expect(switches).toBeGreaterThan(PRODUCERS * 10);

  // One bit: one vector, and every producer edge was preceded by a clear of that one bit.
  expect(here.vectors).toBe(1);
  const counters = replies.map((r) => r.counters as InterruptCounters);
  const total = sumCounters(counters);
  expect(total.rings).toBeGreaterThan(0);
  expect(total.signals).toBeLessThanOrEqual(mine.acks + 1);
  expect(total.signals + total.suppressed).toBe(total.rings);
  const fraction = total.suppressed / total.rings;
  report(
    `fan-in ${PRODUCERS}×${PER_PRODUCER.toLocaleString('en-US')}: ${rate(result.received, result.elapsedMs)} in ${result.elapsedMs.toFixed(0)} ms; ` +
      `producer rings ${total.rings}, suppressed ${total.suppressed} (${(100 * fraction).toFixed(1)}%), edges ${total.signals}; ` +
      `consumer clears ${mine.acks}, wakeups ${mine.wakeups}, eventfd reads ${mine.eventfdReads}; ring switches ${switches}; ` +
      `per producer suppressed: ${counters.map((c) => `${((100 * c.suppressed) / Math.max(1, c.rings)).toFixed(1)}%`).join(', ')}`,
  );
});
