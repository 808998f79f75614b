/**
 * The batch paths: drain(handler, max) and readable() on the consumer, trySendBatch()/send()
 * on the producer. Partial batches, a handler that throws, when the space goes back (once per
 * batch, and a quarter of the buffer at a time within one), wrap-around inside one batch, fan-in
 * turns, and busy-polling ends. Two peers in this process.
 */
import { describe, expect, it } from 'vitest';
import { ChannelConsumer, ChannelProducer, createFanIn, type Peer } from '../../lib/index.js';
import { LONG_WAIT_MS, within } from '../helpers/wait.js';
import { channelPair, useResources } from './helpers.js';

const res = useResources();
const TAIL = 128 / 4;

const pair = (capacity: number, busyPollMicros = 0): ReturnType<typeof channelPair> => channelPair(res, 'batch', capacity, { busyPollMicros });

const filled = (length: number, value: number): Uint8Array => new Uint8Array(length).fill(value & 0xff);
const tailOf = (peer: Peer, offset: number): number => Atomics.load(new Uint32Array(peer.shm.buffer, offset, 64), TAIL);

/** [length, first byte] of each message a drain hands out. */
function collect(consumer: ChannelConsumer, max?: number): number[][] {
  const got: number[][] = [];
  consumer.drain((data, offset, length) => got.push([length, length === 0 ? -1 : data[offset]!]), max);
  return got;
}

describe('drain(handler, max)', () => {
  it('hands every committed message once, in order, and a partial batch leaves the rest', async () => {
    const { producer, consumer } = await pair(4096);
    expect(producer.trySendBatch(Array.from({ length: 10 }, (_, i) => filled(i, i)))).toBe(10);
    expect(collect(consumer, 3)).toEqual([[0, -1], [1, 1], [2, 2]]);
    expect(collect(consumer, 0)).toEqual([]);
    expect(collect(consumer)).toEqual(Array.from({ length: 7 }, (_, i) => [i + 3, i + 3]));
    expect(collect(consumer)).toEqual([]);
  });

  it('gives the space back once per batch: the tail moves only when the drain returns', async () => {
    const { b, producer, consumer, offset } = await pair(4096);
    producer.trySendBatch([filled(4, 1), filled(4, 2), filled(4, 3)]); // 3 records of 8 bytes
    const tails: number[] = [];
    expect(consumer.drain(() => tails.push(tailOf(b, offset)))).toBe(3);
    expect(tails).toEqual([0, 0, 0]); // the views stay valid for the whole batch
    expect(tailOf(b, offset)).toBe(24);
  });

  it('a handler that throws: its message and those before count as read, the rest stay', async () => {
    const { b, producer, consumer, offset } = await pair(4096);
    producer.trySendBatch([1, 2, 3, 4, 5].map((v) => filled(4, v)));
    const seen: number[] = [];
    const boom = new Error('boom');
    expect(() =>
      consumer.drain((data, at) => {
        seen.push(data[at]!);
        if (data[at] === 2) throw boom;
      }),
    ).toThrow(boom);
    expect(seen).toEqual([1, 2]);
    expect(tailOf(b, offset)).toBe(16); // the two read ones went back
    expect(collect(consumer)).toEqual([[4, 3], [4, 4], [4, 5]]);
  });

  it('releases the view tryReceive() handed out, and hands the same bytes to the handler as tryReceive would', async () => {
    const { a, b, producer, consumer, offset } = await pair(4096);
    producer.trySendBatch([filled(9, 7), filled(3, 8)]);
    const first = consumer.tryReceive()!;
    expect([...first.data]).toEqual(new Array(9).fill(7));
    expect(tailOf(b, offset)).toBe(0); // still in use
    const got: number[][] = [];
    consumer.drain((data, at, length, from) => got.push([...data.subarray(at, at + length), from]));
    expect(got).toEqual([[8, 8, 8, a.id]]);
    expect(tailOf(b, offset)).toBe(16 + 8);
  });

  it('wraps around inside one batch: a pad and the records after it in the same drain', async () => {
    const { producer, consumer } = await pair(256);
    // 3 records of 64 bytes (60-byte payloads), read: the index stands at 192 of 256.
    expect(producer.trySendBatch([0, 1, 2].map((v) => filled(60, v)))).toBe(3);
    expect(collect(consumer)).toHaveLength(3);
    // 24 bytes fit before the end; the 104-byte record after it pads the last 40 and starts at 0.
    expect(producer.trySendBatch([filled(20, 10), filled(100, 11), filled(4, 12)])).toBe(3);
    expect(collect(consumer)).toEqual([[20, 10], [100, 11], [4, 12]]);
    // Many wraps, each drain crossing the end at least once.
    let next = 0;
    let read = 0;
    for (let round = 0; round < 200; round++) {
      const msgs = Array.from({ length: 3 }, () => filled(1 + ((next * 37) % 56), next++));
      expect(producer.trySendBatch(msgs)).toBe(3);
      consumer.drain((data, at, length) => {
        expect(length).toBe(1 + ((read * 37) % 56));
        expect(data[at + length - 1]).toBe(read++ & 0xff);
      });
    }
    expect(read).toBe(600);
  });

  it('a producer waiting for space gets it a quarter of the buffer at a time while the batch is read, not at its end', async () => {
    const { b, producer, consumer, offset } = await pair(1024);
    let n = 0;
    while (producer.trySend(filled(56, n))) n++; // 16 records of 64 bytes fill it
    let sent = false;
    const sending = producer.send(filled(56, 99)).then(() => (sent = true));
    await within(
      (async () => {
        // The producer has armed its flag once its send is queued and found no room.
        while (Atomics.load(new Uint32Array(b.shm.buffer, offset, 64), 192 / 4) !== 1) await new Promise((r) => setImmediate(r));
      })(),
      'the producer to wait for space',
      LONG_WAIT_MS,
    );
    const words = new Uint32Array(b.shm.buffer, offset, 64);
    const seen: number[][] = [];
    const got: number[] = [];
    consumer.drain((data, at) => {
      seen.push([tailOf(b, offset), Atomics.load(words, 192 / 4)]);
      got.push(data[at]!);
    });
    // A quarter of the buffer (4 records) goes back at once, mid-batch, and the waiting
    // producer is rung then (its flag taken); not one record at a time, not only at the end.
    expect(seen.slice(0, 5)).toEqual([[0, 1], [0, 1], [0, 1], [0, 1], [256, 0]]);
    expect(seen[8]![0]).toBe(512);
    expect(got).toEqual(Array.from({ length: 16 }, (_, i) => i));
    await within(sending, 'the waiting send to complete', LONG_WAIT_MS);
    expect(sent).toBe(true);
    expect(collect(consumer).map(([, v]) => v)).toEqual([99]);
  });

  it('fan-in: one message of each buffer in turn, as tryReceive()', async () => {
    const server = res.listen('batch-fanin');
    const p1 = await res.connect(server);
    const p2 = await res.connect(server);
    const c = await res.connect(server);
    for (const p of [p1, p2, c]) for (const q of [p1, p2, c]) if (p !== q) await p.waitForPeer(q.id);
    const offsets = createFanIn(c, { offset: server.dataOffset, capacity: 1024, producers: [p1.id, p2.id], consumer: c.id });
    const a = res.track(new ChannelProducer(p1, offsets[0]!));
    const z = res.track(new ChannelProducer(p2, offsets[1]!));
    const consumer = res.track(new ChannelConsumer(c, offsets));
    a.trySendBatch([1, 2, 3, 4].map((v) => filled(1, v)));
    z.trySendBatch([11, 12].map((v) => filled(1, v)));
    const got: number[][] = [];
    consumer.drain((data, at, _length, from) => got.push([from, data[at]!]));
    expect(got).toEqual([
      [p1.id, 1],
      [p2.id, 11],
      [p1.id, 2],
      [p2.id, 12],
      [p1.id, 3],
      [p1.id, 4],
    ]);
  });
});

describe('readable()', () => {
  for (const busyPollMicros of [0, 200]) {
    it(`waits for messages, then ends with false once the producer closed (busyPollMicros ${busyPollMicros})`, async () => {
      const { producer, consumer } = await pair(1024, busyPollMicros);
      const got: number[] = [];
      const reading = (async () => {
        while (await consumer.readable()) consumer.drain((data, at) => got.push(data[at]!));
      })();
      for (let i = 0; i < 300; i++) {
        await producer.send(filled(30, i));
        if (i % 50 === 0) await new Promise((r) => setTimeout(r, 2));
      }
      producer.close();
      await within(reading, 'the reader to end', LONG_WAIT_MS);
      expect(got).toEqual(Array.from({ length: 300 }, (_, i) => i & 0xff));
    });
  }

  it('rejects with ClosedError after close, and drain() throws it', async () => {
    const { consumer } = await pair(1024);
    consumer.close();
    await expect(consumer.readable()).rejects.toThrow(/closed/i);
    expect(() => consumer.drain(() => undefined)).toThrow(/closed/i);
  });
});

describe('send() with room', () => {
  it('returns the same settled promise for every message that went at once', async () => {
    const { producer, consumer } = await pair(1024);
    const first = producer.send(filled(8, 1));
    const second = producer.send(filled(8, 2));
    expect(first).toBe(second);
    await first;
    expect(collect(consumer)).toEqual([[8, 1], [8, 2]]); // published before send() returned
  });
});

describe('a producer that busy-polls for space (busyPollMicros)', () => {
  const WAITING = 192 / 4;

  it('gets the space the consumer gives back within its window without any doorbell', async () => {
    const { a, b, producer, consumer, offset } = await channelPair(res, 'batch-poll', 1024, {}, { busyPollMicros: 2_000_000 });
    const words = new Uint32Array(b.shm.buffer, offset, 64);
    let n = 0;
    while (producer.trySend(filled(56, n))) n++;
    const [space0, signals0] = [a.counters().interrupts, b.counters().signals];
    let flagSeen = false;
    const watch = setInterval(() => (flagSeen ||= Atomics.load(words, WAITING) !== 0), 1);
    const sending = producer.send(filled(56, 99));
    await new Promise((resolve) => setTimeout(resolve, 20)); // the poll lets timers run between its slices
    expect(collect(consumer)).toHaveLength(n);
    await within(sending, 'the polling send to complete', LONG_WAIT_MS);
    clearInterval(watch);
    expect(flagSeen).toBe(false); // it never armed the flag: nobody had to ring it
    expect(a.counters().interrupts - space0).toBe(0);
    expect(b.counters().signals - signals0).toBe(0);
    expect(collect(consumer)).toEqual([[56, 99]]);
  });

  it('past its window it arms the flag and sleeps, and the consumer rings it awake', async () => {
    const { a, b, producer, consumer, offset } = await channelPair(res, 'batch-poll-sleep', 1024, {}, { busyPollMicros: 500 });
    const words = new Uint32Array(b.shm.buffer, offset, 64);
    while (producer.trySend(filled(56, 1)));
    const space0 = a.counters().interrupts;
    const sending = producer.send(filled(56, 99));
    await within(
      (async () => {
        while (Atomics.load(words, WAITING) !== 1) await new Promise((r) => setTimeout(r, 1));
      })(),
      'the producer to give up polling and wait',
      LONG_WAIT_MS,
    );
    consumer.drain(() => undefined);
    await within(sending, 'the woken send to complete', LONG_WAIT_MS);
    expect(a.counters().interrupts - space0).toBe(1);
    expect(collect(consumer)).toEqual([[56, 99]]);
  });

  it('fails its send with ClosedError when closed while it polls', async () => {
    const { producer } = await channelPair(res, 'batch-poll-close', 1024, {}, { busyPollMicros: 2_000_000 });
    while (producer.trySend(filled(56, 1)));
    const sending = producer.send(filled(56, 2));
    setTimeout(() => producer.close(), 5);
    await expect(within(sending, 'the send to fail', LONG_WAIT_MS)).rejects.toThrow(/closed/i);
  });
});
