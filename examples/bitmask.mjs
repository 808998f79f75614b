// The bitmask doorbell: a busy receiver costs its sender no syscall at all.
import { PeerServer, Peer, BitmaskDoorbell } from 'ivshmem';

const server = PeerServer.listen({ socketPath: '/tmp/ivshmem-bitmask.sock', bitmask: true });
const producer = await Peer.connect(server.socketPath, { bitmask: true });
const consumer = await Peer.connect(server.socketPath, { bitmask: true });
await producer.waitForPeer(consumer.id);
const send = new BitmaskDoorbell(producer);
const receive = new BitmaskDoorbell(consumer);

// Work lives in shared memory, after the header: [produced, consumed] counters.
const counters = (peer) => new Int32Array(peer.shm.buffer, peer.header.dataOffset, 2);
const mine = counters(producer);
const theirs = counters(consumer);

const stop = new AbortController();
const served = receive.serve(
  () => Atomics.load(theirs, 0) !== Atomics.load(theirs, 1), // hasWork
  () => { Atomics.add(theirs, 1, 1); },                        // handle one message
  { signal: stop.signal },
);

for (let i = 0; i < 10_000; i++) {
  Atomics.add(mine, 0, 1); // publish the work first...
  send.ring(consumer.id);  // ...then ring: only a 0->1 edge writes the eventfd
}
while (Atomics.load(mine, 1) < 10_000) await new Promise((r) => setImmediate(r));

const { rings, suppressed, eventfdWrites } = producer.counters();
console.log(`${rings} rings, ${suppressed} suppressed, ${eventfdWrites} eventfd writes`);
stop.abort();
await served;
producer.close();
consumer.close();
server.close();
