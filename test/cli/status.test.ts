/**
 * `ivshmem status` against a live `ivshmem server` with peers, a channel and a pending bit: what
 * it shows (text and JSON), that it writes nothing into the memory, a named region opened without
 * joining, --watch, and its errors.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ChannelProducer, createChannel, Peer } from '../../lib/index.js';
import { SharedMemory } from '../../lib/sys/index.js';
import { ivshmem, run } from '../fixtures/cli/child.js';
import { killAllChildren } from '../helpers/children.js';
import { Scratch, uniqueName } from '../helpers/paths.js';

const scratch = new Scratch();
const peers: Peer[] = [];
const names: string[] = [];

afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  await killAllChildren();
  for (const n of names.splice(0)) {
    try {
      SharedMemory.unlink(n);
    } catch {
      // removed by the server already
    }
  }
  scratch.cleanup();
});

/** A --bitmask server with two peers, a channel 0 -> 1 holding 3 messages of 20 bytes, and peer 1's bit set. */
async function liveRegion(extra: string[] = []): Promise<{ socket: string; a: Peer; b: Peer }> {
  const socket = scratch.socket();
  const server = ivshmem(['server', '-S', socket, '--bitmask', '-n', '2', '-l', '1M', ...extra], 'server');
  expect(await server.stdout.take()).toBe(`listening on ${socket}`);
  const a = await Peer.connect(socket, { bitmask: true });
  peers.push(a);
  const b = await Peer.connect(socket, { bitmask: true });
  peers.push(b);
  await a.waitForPeer(b.id);
  createChannel(a, { offset: a.header.dataOffset, capacity: 4096, producer: a.id, consumer: b.id });
  const producer = new ChannelProducer(a, a.header.dataOffset);
  for (let i = 0; i < 3; i++) expect(producer.trySend(new Uint8Array(20).fill(i))).toBe(true);
  b.pendingBits.claim();
  return { socket, a, b };
}

describe('ivshmem status', () => {
  it('--json: size, its own peer, the peers and their vectors, live and pending bits, the channel and its fill', async () => {
    const { socket, a, b } = await liveRegion();
    await new Promise((resolve) => setTimeout(resolve, 50)); // the channel's first ring has arrived
    const data = Buffer.from(a.shm.bytes(a.header.dataOffset, a.shm.size - a.header.dataOffset));
    const interrupts = (): number => a.counters().interrupts + b.counters().interrupts;
    const rung = interrupts();
    const r = await run(['status', '-S', socket, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const s = JSON.parse(lines[0]!) as Record<string, unknown>;
    const self = s.id as number;
    expect(s).toEqual({
      source: { socket },
      id: self,
      vectors: 2,
      peers: [{ id: a.id, vectors: 2 }, { id: b.id, vectors: 2 }],
      serverLost: false,
      size: 1 << 20,
      header: { maxPeers: 64, dataOffset: 4096, live: [a.id, b.id, self].sort((x, y) => x - y), pending: [b.id], leases: [] },
      headerError: null,
      channels: [{ offset: 4096, producer: a.id, consumer: b.id, capacity: 4096, used: 72, closed: false, waiting: false }],
      scanned: (1 << 20) - 4096,
    });
    // Read only: the application's bytes are as they were, and nobody was rung.
    expect(Buffer.from(a.shm.bytes(a.header.dataOffset, a.shm.size - a.header.dataOffset)).equals(data)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(interrupts()).toBe(rung);
  });

  it('text: the same at a glance', async () => {
    const { socket, a, b } = await liveRegion();
    const r = await run(['status', '-S', socket]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(new RegExp(`^region: 1048576 bytes, through ${socket.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} as peer \\d+ \\(2 vectors\\)$`));
    expect(lines[1]).toBe(`peers: ${a.id}(2) ${b.id}(2)`);
    expect(lines[2]).toBe('bitmask header: 64 peer bits, data from byte 4096');
    expect(lines[3]).toMatch(new RegExp(`^  live: ${a.id} ${b.id} \\d+    pending: ${b.id}    leases: \\(none\\)$`));
    expect(lines[4]).toBe(`channels (searched ${(1 << 20) - 4096} bytes):`);
    expect(lines[5]).toBe('  offset  producer  consumer  capacity  used  fill  state');
    expect(lines[6]).toBe(`  4096    ${a.id}         ${b.id}         4096      72    1.8%  open`);
  });

  it('-M NAME: opens a named region directly, joins nothing (no peer is told)', async () => {
    const name = `/${uniqueName('status')}`;
    names.push(name);
    const { a } = await liveRegion(['-M', name]);
    const joined: number[] = [];
    a.on('peer-joined', (id) => joined.push(id));
    const r = await run(['status', '-M', name, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(s.source).toEqual({ shm: name });
    expect(s).not.toHaveProperty('peers');
    expect(s.header).toMatchObject({ live: [0, 1], pending: [1] });
    expect(s.channels).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(joined).toEqual([]);
    const text = await run(['status', '-M', name]);
    expect(text.stdout.split('\n')[0]).toBe(`region: 1048576 bytes, through the named object ${name}`);
  });

  it('--watch looks again until SIGTERM, then exits 0; the fill it shows follows the channel', async () => {
    const { socket, a } = await liveRegion();
    const watch = ivshmem(['status', '-S', socket, '--json', '--watch', '100'], 'status');
    const first = JSON.parse(await watch.stdout.take()) as { channels: { used: number }[] };
    expect(first.channels[0]!.used).toBe(72);
    new ChannelProducer(a, a.header.dataOffset).trySend(new Uint8Array(20));
    const later = await watch.stdout.take((l) => (JSON.parse(l) as { channels: { used: number }[] }).channels[0]!.used === 96, 'a look with 4 messages');
    expect(JSON.parse(later)).toMatchObject({ channels: [{ used: 96 }] });
    watch.signal('SIGTERM');
    expect(await watch.exit()).toEqual({ code: 0, signal: null });
  });

  it('errors: no server, no such object, -S with -M', async () => {
    const missing = scratch.socket();
    const r = await run(['status', '-S', missing, '--timeout', '1000']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot open ${missing}`);
    const j = await run(['status', '-S', missing, '--json']);
    expect(JSON.parse(j.stdout)).toMatchObject({ event: 'error', message: expect.stringContaining('ENOENT') });
    const m = await run(['status', '-M', `/${uniqueName('nothing')}`]);
    expect(m.code).toBe(1);
    expect(m.stderr).toContain('cannot open the shared memory');
    const both = await run(['status', '-S', missing, '-M', '/x']);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('cannot be used with');
  });
});
