/**
 * Helpers of the channel suites: their resources (a bitmask server of 1 MiB by default, bitmask
 * peers) closed in afterEach with the children, channel fixtures (test/fixtures/channel/)
 * connected to a server, and how results are printed. Runs of many messages get the long
 * timeout (LONG_WAIT_MS) throughout.
 */
import { afterEach } from 'vitest';
import { ChannelConsumer, ChannelProducer, createChannel, type ConsumerOptions, type Peer, type ProducerOptions, type PeerServer } from '../../lib/index.js';
import { JsonChild, killAllChildren } from '../helpers/children.js';
import { Resources } from '../helpers/resources.js';
import { LONG_WAIT_MS } from '../helpers/wait.js';

/** The servers, peers and channel ends of each test, closed in afterEach, then its children killed. */
export function useResources(): Resources {
  const res = new Resources({ server: { bitmask: true, size: 1 << 20 }, peer: { bitmask: true, timeout: LONG_WAIT_MS } });
  afterEach(async () => {
    res.closeAll();
    await killAllChildren();
  });
  return res;
}

/** Spawns test/fixtures/channel/<script> with `options` (its argv[2]); its waits get the long timeout. */
export function spawnChild(script: string, options: object, name: string): JsonChild {
  return JsonChild.fixture(`channel/${script}`, options, name, { waitMs: LONG_WAIT_MS });
}

/** Spawns test/fixtures/channel/<script> connected to `server`; resolves once it is (its peer ID in `id`). */
export function startChild(script: string, server: PeerServer, name: string): Promise<JsonChild> {
  return spawnChild(script, { socketPath: server.socketPath }, name).whenReady();
}

/**
 * A producer child (producer.mjs, idle until told to produce) and a consumer in this process,
 * over a channel of `capacity` at the start of the data; `left` collects 'producer-left'.
 */
export async function fromProducerChild(
  res: Resources,
  tag: string,
  capacity: number,
): Promise<{ here: Peer; child: JsonChild; offset: number; consumer: ChannelConsumer; left: number[] }> {
  const server = res.listen(tag);
  const here = await res.connect(server);
  const child = await startChild('producer.mjs', server, 'producer');
  await here.waitForPeer(child.id);
  const offset = server.dataOffset;
  createChannel(here, { offset, capacity, producer: child.id, consumer: here.id });
  const consumer = res.track(new ChannelConsumer(here, offset));
  const left: number[] = [];
  consumer.on('producer-left', (id) => left.push(id));
  return { here, child, offset, consumer, left };
}

export const rate = (messages: number, ms: number): string => `${Math.round(messages / (ms / 1000)).toLocaleString('en-US')} messages/s`;

/** Prints one line of measurements (vitest shows console output of the test process). */
export function report(line: string): void {
  console.log(`[channel] ${line}`);
}

/** Two peers in this process and one channel between them (producer a → consumer b). */
export async function channelPair(
  res: Resources,
  tag: string,
  capacity: number,
  options: ConsumerOptions = {},
  producerOptions: ProducerOptions = {},
): Promise<{ a: Peer; b: Peer; producer: ChannelProducer; consumer: ChannelConsumer; offset: number }> {
  const server = res.listen(tag);
  const a = await res.connect(server);
  const b = await res.connect(server);
  await a.waitForPeer(b.id);
  await b.waitForPeer(a.id);
  const offset = server.dataOffset;
  createChannel(a, { offset, capacity, producer: a.id, consumer: b.id });
  const producer = res.track(new ChannelProducer(a, offset, producerOptions));
  const consumer = res.track(new ChannelConsumer(b, offset, options));
  return { a, b, producer, consumer, offset };
}
