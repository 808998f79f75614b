// Two peers of one ivshmem network in one process: share memory, ring a doorbell.
import { PeerServer, Peer } from 'ivshmem';

const server = PeerServer.listen({ socketPath: '/tmp/ivshmem-quickstart.sock', vectors: 2 });
const alice = await Peer.connect(server.socketPath);
const bob = await Peer.connect(server.socketPath);

// The same bytes, mapped in both.
new TextEncoder().encodeInto('hello from alice', alice.shm.bytes(0, 64));

const interrupt = new Promise((resolve) => bob.once('interrupt', (vector) => resolve(vector)));
await alice.waitForPeer(bob.id); // joins are announced asynchronously
alice.ring(bob.id, 1); // bob's eventfd for vector 1
console.log(`bob got an interrupt on vector ${await interrupt}:`,
  new TextDecoder().decode(bob.shm.bytes(0, 16)));

alice.close();
bob.close();
server.close();
