/**
 * Everything above the endpoint interface works over any Endpoint, not only a Peer: two
 * endpoints made here from the sys layer alone (a mapping each of one memfd with the bitmask
 * header, an interrupt table each, eventfds made in this process; no server, no socket) carry a
 * BitmaskDoorbell's rings, a channel's messages and a device model's doorbells.
 */
import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { BitWords, headerLayout, writeHeader, type HeaderLayout } from '../../lib/protocol/header.js';
import { InterruptTable, type InterruptCounters } from '../../lib/sys/interrupt-table.js';
import { lowBuffer } from '../../lib/sys/shared-memory.js';
import { BitmaskDoorbell, ChannelConsumer, ChannelProducer, ClosedError, createChannel, type Endpoint, type EndpointEvents, type PeerVectors, type PendingBits } from '../../lib/index.js';
import { EventFd, SharedMemory } from '../../lib/sys/index.js';
import { QemuDevice } from '../../lib/devices/index.js';
import { copyOf } from '../helpers/eventfds.js';
import { closeTracked, track } from '../helpers/network.js';
import { waitFor } from '../helpers/wait.js';

afterEach(closeTracked);

/** An endpoint with no network under it: its peers are whoever it is told of. */
class LocalEndpoint extends EventEmitter<EndpointEvents> implements Endpoint {
  readonly #table: InterruptTable;
  #closed = false;

  constructor(
    readonly id: number,
    readonly shm: SharedMemory,
    readonly header: HeaderLayout,
    own: EventFd,
  ) {
    super();
    this.#table = new InterruptTable({
      self: id,
      onInterrupt: (vector, count) => this.emit('interrupt', vector, count),
      bitmask: { memory: lowBuffer(shm), layout: header },
    });
    this.#table.add(id, copyOf(own));
  }

  /** Peer `id` joined, rung through `ev`. */
  join(id: number, ev: EventFd): void {
    this.#table.add(id, copyOf(ev));
    this.emit('peer-joined', id);
  }

  get pendingBits(): PendingBits {
    if (this.#closed) throw new ClosedError('LocalEndpoint');
    return this.#table.pendingWords!;
  }
  get vectors(): number {
    return this.#table.vectorsOf(this.id);
  }
  get closed(): boolean {
    return this.#closed;
  }
  peers(): PeerVectors[] {
    return this.#table.peers();
  }
  vectorsOf(id: number): number {
    return this.#table.vectorsOf(id);
  }
  ring(peer: number, vector = 0): void {
    if (!this.#table.signal(peer, vector)) throw new RangeError(`peer ${peer} has no vector ${vector}`);
  }
  counters(): InterruptCounters {
    return this.#table.counters();
  }
  resetCounters(): void {
    this.#table.resetCounters();
  }
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#table.close();
    this.shm.close();
    this.emit('close');
  }
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Endpoints 1 and 2 over one memfd, each knowing the other, both live in the header. */
function pair(): { a: LocalEndpoint; b: LocalEndpoint } {
  const memory = track(SharedMemory.create({ size: 1 << 16 }));
  const layout = headerLayout(64);
  writeHeader(memory.buffer, layout);
  const live = new BitWords(memory.buffer, layout.liveOffset, layout.words);
  live.set(1);
  live.set(2);
  const ev1 = track(new EventFd());
  const ev2 = track(new EventFd());
  const a = track(new LocalEndpoint(1, SharedMemory.fromFd(memory.fd, { dup: true }), layout, ev1));
  const b = track(new LocalEndpoint(2, SharedMemory.fromFd(memory.fd, { dup: true }), layout, ev2));
  a.join(2, ev2);
  b.join(1, ev1);
  return { a, b };
}

describe('the layers above, over an endpoint that is not a Peer', () => {
  it('BitmaskDoorbell: rings, suppression, the receive loop', async () => {
    const { a, b } = pair();
    const work = new Int32Array(a.shm.buffer, a.header.dataOffset, 2);
    const seen = new Int32Array(b.shm.buffer, b.header.dataOffset, 2);
    const send = track(new BitmaskDoorbell(a));
    const receive = track(new BitmaskDoorbell(b));
    const stop = new AbortController();
    const served = receive.serve(
      () => Atomics.load(seen, 0) !== Atomics.load(seen, 1),
      () => void Atomics.add(seen, 1, 1),
      { signal: stop.signal },
    );
    for (let i = 0; i < 1000; i++) {
      Atomics.add(work, 0, 1);
      send.ring(b.id);
    }
    await waitFor(() => Atomics.load(work, 1) === 1000, 'the receiver to take all 1000');
    stop.abort();
    await served;
    const sent = a.counters();
    expect(sent.rings).toBe(1000);
    expect(sent.signals).toBeGreaterThanOrEqual(1);
    expect(sent.suppressed + sent.signals).toBe(1000);
    expect(sent.eventfdWrites).toBe(sent.signals);
    b.pendingBits.ack();
    expect([send.broadcast(), send.broadcast()]).toEqual([1, 0]); // b only (live, not a itself); then pending
  });

  it('a channel: every message, in order', async () => {
    const { a, b } = pair();
    createChannel(a, { offset: a.header.dataOffset, capacity: 4096, producer: a.id, consumer: b.id });
    const producer = track(new ChannelProducer(a, a.header.dataOffset));
    const consumer = track(new ChannelConsumer(b, b.header.dataOffset));
    const received: number[] = [];
    const reading = (async () => {
      for await (const m of consumer) received.push(new DataView(m.data.buffer, m.data.byteOffset, 4).getUint32(0, true));
    })();
    for (let i = 0; i < 2000; i++) {
      const bytes = new Uint8Array(4 + (i % 200));
      new DataView(bytes.buffer).setUint32(0, i, true);
      await producer.send(bytes);
    }
    producer.close();
    await reading;
    expect(received).toEqual(Array.from({ length: 2000 }, (_, i) => i));
  });

  it('a device model: QemuDevice doorbells become the other side\'s interrupts', async () => {
    const { a, b } = pair();
    const sender = track(new QemuDevice(a));
    const receiver = track(new QemuDevice(b));
    const got: number[] = [];
    receiver.on('interrupt', (vector) => got.push(vector));
    sender.ring(b.id, 0);
    await waitFor(() => got.length === 1, 'the injection');
    sender.ring(42, 0); // unknown: ignored, as QEMU does
    expect(sender.stats()).toMatchObject({ traps: 2, eventfdWrites: 1 });
    expect(receiver.stats()).toMatchObject({ injections: 1, eventfdReads: 1, wakeups: 1 });
  });
});
