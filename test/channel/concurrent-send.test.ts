/** Concurrent sends on a full ring. */
import { afterEach, describe, expect, it } from 'vitest';
import { ChannelConsumer, ChannelProducer, createChannel } from '../../lib/index.js';
import { closeTracked, track, twoPeers } from '../helpers/network.js';

afterEach(closeTracked);

describe('channels', () => {
  it('concurrent send() calls on a full ring all complete, in call order', async () => {
    const { server, a, b } = await twoPeers({ bitmask: true });
    createChannel(a, { offset: server.dataOffset, capacity: 256, producer: a.id, consumer: b.id });
    const producer = track(new ChannelProducer(a, server.dataOffset));
    const consumer = track(new ChannelConsumer(b, server.dataOffset));
    const sends = Array.from({ length: 50 }, (_, i) => producer.send(new Uint8Array([i, ...new Array(40).fill(i)])));
    const seen: number[] = [];
    for await (const { data } of consumer) {
      seen.push(data[0]!);
      if (seen.length === 50) break;
    }
    await Promise.all(sends);
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });
});
