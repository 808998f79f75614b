// Two processes, one channel: the parent serves the network and produces; a child consumes.
import { fork } from 'node:child_process';
import { PeerServer, Peer, ChannelProducer, ChannelConsumer, createChannel, waitForChannel } from 'ivshmem';

const socketPath = '/tmp/ivshmem-channel-example.sock';

if (process.argv[2] === 'consumer') {
  const peer = await Peer.connect(socketPath, { bitmask: true });
  const offset = Number(process.argv[3]);
  await waitForChannel(peer, offset); // the producer lays it out
  const inbox = new ChannelConsumer(peer, offset);
  let count = 0;
  let bytes = 0;
  for await (const { data } of inbox) { // zero-copy views, valid until the next message
    count++;
    bytes += data.byteLength;
  }
  // The producer closed its end: every message was read.
  process.send({ count, bytes, counters: peer.counters() });
  peer.close();
} else {
  const server = PeerServer.listen({ socketPath, bitmask: true, size: 1 << 20 });
  const producer = await Peer.connect(socketPath, { bitmask: true });
  const child = fork(new URL(import.meta.url).pathname, ['consumer', String(server.dataOffset)]);
  const consumerId = await new Promise((resolve) => producer.once('peer-joined', resolve));
  createChannel(producer, { offset: server.dataOffset, capacity: 65536, producer: producer.id, consumer: consumerId });
  const outbox = new ChannelProducer(producer, server.dataOffset);

  const message = new TextEncoder().encode('x'.repeat(64));
  for (let i = 0; i < 100_000; i++) await outbox.send(message); // waits only while the ring is full
  outbox.close();

  const report = await new Promise((resolve) => child.once('message', resolve));
  const sent = producer.counters();
  console.log(`consumer read ${report.count} messages (${report.bytes} bytes);`,
    `${sent.suppressed} of ${sent.rings} rings were suppressed, ${sent.eventfdWrites} eventfd writes`);
  producer.close();
  server.close();
}
