/**
 * Backpressure. Across processes: a producer child sends 20,000 messages through a 1024-byte
 * ring to a slow consumer here (it sleeps 2 ms every 25 messages while still holding the
 * zero-copy view): trySend() returns false (counted), send() waits, the consumer's release
 * rings the waiting producer awake, nothing is lost or reordered, and it all ends (no deadlock).
 *
 * In one process, exactly: trySend() on a full ring returns false at once, and true again for
 * a record that fits the bytes left (accounting to the byte, pads included); send() on a full
 * ring stays pending until the consumer frees space; a message one byte over maxMessage is a
 * RangeError from every send method (even on a full ring, where it must not wait); a message
 * of exactly maxMessage goes through on an empty ring wherever the index stands.
 */
import { describe, expect, it } from 'vitest';
import { ChannelConsumer, maxMessage, type Peer, type ReceivedMessage } from '../../lib/index.js';
import { consumeAll, Verifier } from '../fixtures/channel/common.mjs';
import { LONG_WAIT_MS, settled, sleep, within } from '../helpers/wait.js';
import { channelPair, fromProducerChild, report, useResources } from './helpers.js';

const res = useResources();

const pair = (capacity: number): ReturnType<typeof channelPair> => channelPair(res, 'bp', capacity);

const filled = (length: number, value: number): Uint8Array => new Uint8Array(length).fill(value & 0xff);

function drain(consumer: ChannelConsumer): number[][] {
  const out: number[][] = [];
  for (let m: ReceivedMessage | null; (m = consumer.tryReceive()) !== null; ) out.push([m.data.byteLength, m.data[0] ?? -1]);
  return out;
}

/** A few event-loop turns: long enough for anything already runnable to run. */
async function turns(n = 20): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}

describe('a slow consumer across processes', () => {
  it('makes trySend() return false and send() wait; the producer is woken; nothing lost or reordered', { timeout: 120_000 }, async () => {
    const capacity = 1024;
    const count = 20_000;
    const seed = 7;
    const { here, child, offset, consumer } = await fromProducerChild(res, 'bp-slow', capacity);
    here.resetCounters();
    const verifier = new Verifier(seed, capacity, 0, 'small');
    const consuming = consumeAll(consumer, {
      verifiers: new Map([[child.id, verifier]]),
      mode: 'iterate',
      shmBuffer: here.shm.buffer,
      slowEvery: 25,
      slowMs: 2,
    });
    const [result, reply] = await Promise.all([
      within(consuming, 'the slow consumer to read everything', LONG_WAIT_MS),
      child.request({ cmd: 'produce', offset, consumer: here.id, count, seed, mode: 'trySend', profile: 'small' }),
    ]);
    expect(result.failure).toBeNull();
    expect(result.error).toBeNull();
    expect(result.received).toBe(count);
    expect(verifier.expected).toBe(count);
    expect(reply.sent).toBe(count);
    // The ring was full: trySend() said so, and send() had to wait.
    expect(reply.trySendFalse).toBeGreaterThan(0);
    // The producer slept on its eventfd and was woken (by this consumer's rings: its only ones).
    expect(reply.counters.wakeups).toBeGreaterThan(0);
    const mine = here.counters();
    expect(mine.rings).toBeGreaterThan(0);
    // No one is left waiting.
    expect(Atomics.load(new Uint32Array(here.shm.buffer, offset, 64), 48)).toBe(0);
    report(
      `slow consumer: ${count} messages, trySend false ${reply.trySendFalse} times; producer woken ${reply.counters.wakeups} times ` +
        `(${reply.counters.interrupts} with a count); consumer rang the producer ${mine.rings} times, ${mine.suppressed} suppressed`,
    );
  });
});

describe('a full ring, in one process', () => {
  it('trySend() returns false at once, and accounts space to the byte (pads included)', async () => {
    const { producer, consumer } = await pair(4096);
    const m = filled(100, 1); // record 104
    let sent = 0;
    while (producer.trySend(m)) sent++;
    expect(sent).toBe(Math.floor(4096 / 104)); // 39 records, 4056 bytes; 40 left at the end
    expect(producer.trySend(m)).toBe(false); // still full, still no waiting
    expect(producer.trySendBatch([m, m])).toBe(0);
    // 40 bytes left before the end: a 32-byte record fits there, then an 8-byte one.
    expect(producer.trySend(filled(28, 2))).toBe(true);
    expect(producer.trySend(filled(4, 3))).toBe(true);
    // Exactly full now: not even an empty message fits.
    expect(producer.trySend(new Uint8Array(0))).toBe(false);
    const got = drain(consumer);
    expect(got).toHaveLength(41);
    expect(got.slice(0, 39).every(([n, v]) => n === 100 && v === 1)).toBe(true);
    expect(got.slice(39)).toEqual([
      [28, 2],
      [4, 3],
    ]);
    // The next record starts at 0 again (no pad needed: the last one ended exactly at the end).
    expect(producer.trySend(filled(2040, 4))).toBe(true);
    expect(drain(consumer)).toEqual([[2040, 4]]);
  });

  it('a record that does not fit before the end needs the pad bytes too', async () => {
    const { producer, consumer } = await pair(256);
    // 200 bytes of records, consumed: the index stands at 200, 56 bytes before the end.
    for (let i = 0; i < 25; i++) expect(producer.trySend(filled(4, i))).toBe(true);
    expect(drain(consumer)).toHaveLength(25);
    // A 120-byte message (record 128) does not fit in 56: it needs a 56-byte pad + 128 = 184 ≤ 256.
    expect(producer.trySend(filled(120, 9))).toBe(true);
    // Used 184 of 256 (the tail stands at 200, the pad's start): the 72 free bytes are 128 … 199.
    expect(producer.trySend(filled(60, 10))).toBe(true); // record 64 → used 248
    expect(producer.trySend(filled(4, 11))).toBe(true); // record 8 → used 256
    expect(producer.trySend(new Uint8Array(0))).toBe(false);
    expect(drain(consumer)).toEqual([
      [120, 9],
      [60, 10],
      [4, 11],
    ]);
  });

  it('send() on a full ring stays pending until the consumer frees space, then completes in order', async () => {
    const { producer, consumer } = await pair(1024);
    let n = 0;
    while (producer.trySend(filled(56, n))) n++; // record 64: 16 fill the ring
    expect(n).toBe(16);
    let done = false;
    const sending = producer.send(filled(56, 16)).then(() => {
      done = true;
    });
    await turns();
    expect(done).toBe(false);
    // Read them one at a time (each read releases the previous record) until the send goes through.
    const got: number[] = [];
    for (let i = 0; i < 64 && !done; i++) {
      const m = consumer.tryReceive();
      if (m !== null) got.push(m.data[0]!);
      await turns(5);
    }
    await within(sending, 'the waiting send() to complete', LONG_WAIT_MS);
    for (let m: ReceivedMessage | null; (m = consumer.tryReceive()) !== null; ) got.push(m.data[0]!);
    expect(got).toEqual(Array.from({ length: 17 }, (_, i) => i));
  });

  it('a waiting sendBatch() completes as the consumer reads, every message in order', async () => {
    const { producer, consumer } = await pair(512);
    const batch = Array.from({ length: 100 }, (_, i) => filled(1 + (i % 50), i));
    const sending = producer.sendBatch(batch);
    const got: number[] = [];
    const reading = (async () => {
      for await (const { data } of consumer) {
        got.push(data[0]!);
        expect(data.byteLength).toBe(1 + (got.length - 1) % 50);
        if (got.length === 100) break;
        if (got.length % 7 === 0) await sleep(1);
      }
    })();
    await within(Promise.all([sending, reading]), 'the batch to go through a 512-byte ring', LONG_WAIT_MS);
    expect(got).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });
});

describe('message size limits', () => {
  it('maxMessage is capacity/2 - 8 and is what the producer reports', async () => {
    const { producer } = await pair(4096);
    expect(producer.maxMessage).toBe(2040);
    expect(maxMessage(4096)).toBe(2040);
    expect(maxMessage(64)).toBe(24);
  });

  it('one byte over maxMessage is a RangeError from every send method, even on a full ring', async () => {
    const { producer, consumer } = await pair(1024);
    const tooBig = new Uint8Array(maxMessage(1024) + 1);
    expect(() => producer.trySend(tooBig)).toThrow(RangeError);
    expect(() => producer.trySendBatch([tooBig])).toThrow(RangeError);
    await expect(producer.send(tooBig)).rejects.toThrow(RangeError);
    await expect(producer.sendBatch([tooBig])).rejects.toThrow(RangeError);
    // Fill the ring: an oversized send must still fail at once rather than wait for space.
    while (producer.trySend(new Uint8Array(100))) {
      // fill
    }
    const outcome = await within(settled(producer.send(tooBig)), 'send(too big) on a full ring to settle', 5000);
    expect(outcome.ok).toBe(false);
    expect(outcome.ok ? null : outcome.error).toBeInstanceOf(RangeError);
    // Nothing of the failed sends reached the ring.
    expect(drain(consumer).every(([n]) => n === 100)).toBe(true);
  });

  it('exactly maxMessage goes through on an empty ring wherever the index stands (64 positions)', async () => {
    const capacity = 1024;
    const { producer, consumer } = await pair(capacity);
    const max = maxMessage(capacity);
    const big = new Uint8Array(max);
    for (let i = 0; i < max; i++) big[i] = (i * 7 + 3) & 0xff;
    for (let step = 0; step < 64; step++) {
      // Move the index by 16 bytes (a 5..12-byte message), then send the maximum.
      expect(producer.trySend(new Uint8Array(5 + (step % 8)))).toBe(true);
      expect(consumer.tryReceive()?.data.byteLength).toBe(5 + (step % 8));
      consumer.release();
      expect(producer.trySend(big)).toBe(true);
      const m = consumer.tryReceive();
      expect(m).not.toBeNull();
      expect(m!.data.byteLength).toBe(max);
      expect(Buffer.compare(m!.data, big)).toBe(0);
      consumer.release();
    }
  });

  it('the smallest ring (64 bytes) carries 24-byte messages, and not 25', async () => {
    const { producer, consumer } = await pair(64);
    expect(producer.maxMessage).toBe(24);
    expect(() => producer.trySend(new Uint8Array(25))).toThrow(RangeError);
    const got: number[] = [];
    for (let i = 0; i < 50; i++) {
      expect(producer.trySend(filled(24, i))).toBe(true);
      const m = consumer.tryReceive();
      got.push(m!.data[0]!);
    }
    expect(got).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });
});
