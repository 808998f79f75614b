/**
 * Channels: single-producer / single-consumer rings of variable-length messages in the shared
 * memory, notified through the bitmask doorbell. While the consumer is busy its pending bit
 * stays set and the producer's rings cost nothing; a full buffer makes the producer wait for
 * space, and the consumer wakes it through the doorbell in the other direction, again only on
 * the 0->1 edge. Byte layout: docs/channel.md. This module lays channels out (one, a duplex
 * pair, a fan-in); the ends are in producer.ts and consumer.ts, the buffer in record-buffer.ts.
 */
import { channelBytes, checkCapacity, readChannelHeader, writeChannelHeader, type ChannelInfo } from '../protocol/channel-layout.js';
import { CorruptError, TimeoutError } from '../core/errors.js';
import type { Endpoint } from '../endpoint/endpoint.js';
import * as check from '../core/validate.js';
import { lowBuffer } from '../sys/shared-memory.js';
import { ChannelProducer } from './producer.js';
import { ChannelConsumer } from './consumer.js';

export { ChannelProducer, type ProducerEvents, type ProducerOptions } from './producer.js';
export { ChannelConsumer, type ConsumerEvents, type ConsumerOptions, type MessageHandler, type ReceivedMessage } from './consumer.js';
export { channelBytes, maxMessage } from '../protocol/channel-layout.js';

export interface CreateChannelOptions {
  /** Byte offset of the channel in the shared memory (64-byte aligned; after the header). */
  offset: number;
  /** Data bytes, a power of two (default 65536). Messages up to capacity/2 - 8 bytes. */
  capacity?: number;
  producer: number;
  consumer: number;
}

/**
 * Lays out an empty channel. Exactly one party creates it (before the producer sends), either
 * end or whoever sets up the memory; the ends then open it by offset.
 */
export function createChannel(peer: Endpoint, options: CreateChannelOptions): ChannelInfo {
  const capacity = checkCapacity(options.capacity ?? 65536);
  const offset = check.integer('offset', options.offset, peer.header.dataOffset);
  const info = {
    capacity,
    producer: check.integer('producer', options.producer, 0, 65535),
    consumer: check.integer('consumer', options.consumer, 0, 65535),
  };
  writeChannelHeader(lowBuffer(peer.shm), offset, info);
  return info;
}

/** Waits until a channel exists at `offset` (created by the other side), polling. */
export async function waitForChannel(peer: Endpoint, offset: number, timeout = 5000): Promise<ChannelInfo> {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return readChannelHeader(lowBuffer(peer.shm), offset);
    } catch (error) {
      if (!(error instanceof CorruptError) || Date.now() > deadline) {
        throw Date.now() > deadline ? new TimeoutError(`no channel appeared at offset ${offset} within ${timeout} ms`, { cause: error }) : error;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

export interface DuplexOptions {
  /** Where the pair of rings starts (64-byte aligned, after the header). */
  offset: number;
  /** Data bytes per direction (power of two, default 65536). */
  capacity?: number;
  /** How long the higher-ID side waits for the rings to appear (ms, default 5000). */
  timeout?: number;
  /** Both ends' busy polling before they sleep: the consumer's for messages, the producer's
   * for space (see ConsumerOptions and ProducerOptions `busyPollMicros`). */
  busyPollMicros?: number;
}

export interface Duplex extends Disposable {
  readonly producer: ChannelProducer;
  readonly consumer: ChannelConsumer;
  close(): void;
}

/**
 * One channel per direction between this peer and `other`, at `offset` (lower ID → higher ID)
 * and right after it (higher → lower). The lower ID lays both out; the other side waits for them.
 */
export async function openDuplex(peer: Endpoint, other: number, options: DuplexOptions): Promise<Duplex> {
  check.integer('other', other, 0, 65535);
  if (other === peer.id) throw new RangeError('a duplex channel needs another peer');
  const capacity = checkCapacity(options.capacity ?? 65536);
  const offset = options.offset;
  const second = offset + channelBytes(capacity);
  const [low, high] = peer.id < other ? [peer.id, other] : [other, peer.id];
  if (peer.id === low) {
    createChannel(peer, { offset, capacity, producer: low, consumer: high });
    createChannel(peer, { offset: second, capacity, producer: high, consumer: low });
  } else {
    await waitForChannel(peer, offset, options.timeout);
    await waitForChannel(peer, second, options.timeout);
  }
  const [out, inbound] = peer.id === low ? [offset, second] : [second, offset];
  const busyPollMicros = options.busyPollMicros ?? 0;
  const producer = new ChannelProducer(peer, out, { busyPollMicros });
  const consumer = new ChannelConsumer(peer, inbound, { busyPollMicros });
  const close = (): void => {
    producer.close();
    consumer.close();
  };
  return { producer, consumer, close, [Symbol.dispose]: close };
}

export interface FanInLayout {
  /** Offset of the first buffer; the others follow, one per producer. */
  offset: number;
  capacity?: number;
  producers: readonly number[];
  consumer: number;
}

/** Lays out one buffer per producer for a fan-in; returns each producer's buffer offset. */
export function createFanIn(peer: Endpoint, layout: FanInLayout): number[] {
  const capacity = checkCapacity(layout.capacity ?? 65536);
  return layout.producers.map((producer, i) => {
    const offset = layout.offset + i * channelBytes(capacity);
    createChannel(peer, { offset, capacity, producer, consumer: layout.consumer });
    return offset;
  });
}
