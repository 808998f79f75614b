/**
 * openDuplex() between two processes (test/fixtures/channel/duplex.mjs). The lower ID lays out
 * both rings (low → high at `offset`, high → low right after it); the other side waits for them.
 *
 * - Echo, ping-pong: A sends 10,000 messages one at a time, B sends each back (from the zero-copy
 *   view it still holds); A checks every echo (length, sequence number, checksum) in order.
 * - Echo, pipelined: the same 10,000 through 1024-byte rings with A sending and reading at once,
 *   so B's writer waits for space while B's reader holds a message.
 * - Flood: both send 100,000 messages at once through 512-byte rings while reading the other's;
 *   every 100 messages each reader keeps its message (and its ring space) across a 1 ms sleep,
 *   so each peer's writer waits for space while the same peer's reader is busy. The one reactor
 *   per peer must keep both going: no deadlock, everything in order.
 */
import { describe, expect, it } from 'vitest';
import { channelBytes, type InterruptCounters, type PeerServer } from '../../lib/index.js';
import type { JsonChild } from '../helpers/children.js';
import { rate, report, startChild, useResources } from './helpers.js';

const res = useResources();

async function twoEnds(tag: string): Promise<{ server: PeerServer; a: JsonChild; b: JsonChild }> {
  const server = res.listen(tag);
  const a = await startChild('duplex.mjs', server, 'duplex A');
  const b = await startChild('duplex.mjs', server, 'duplex B');
  return { server, a, b };
}

/** The two ring headers as the server's memory shows them. */
function rings(server: PeerServer, offset: number, capacity: number): { producer: number; consumer: number; capacity: number }[] {
  return [offset, offset + channelBytes(capacity)].map((at) => {
    const w = new Uint32Array(server.shm.buffer, at, 64);
    expect(w[0]).toBe(0x48435649);
    return { capacity: w[2]!, producer: w[3]!, consumer: w[4]! };
  });
}

describe('openDuplex between two processes', () => {
  it('echo, ping-pong: 10,000 messages there and back, each checked', { timeout: 120_000 }, async () => {
    const { server, a, b } = await twoEnds('dx-echo');
    const offset = server.dataOffset;
    const capacity = 4096;
    const common = { offset, capacity, profile: 'small' };
    const serverSide = b.request({ cmd: 'duplex', other: a.id, role: 'echo-server', ...common });
    const client = await a.request({ cmd: 'duplex', other: b.id, role: 'echo-client', count: 10_000, seed: 5, pingPong: true, ...common });
    const echo = await serverSide;
    expect(client.failure).toBeNull();
    expect(client.received).toBe(10_000);
    expect(client.ended).toBe(true); // B closed its end after A closed its own
    expect(echo.echoed).toBe(10_000);
    const [low, high] = a.id < b.id ? [a.id, b.id] : [b.id, a.id];
    expect(rings(server, offset, capacity)).toEqual([
      { capacity, producer: low, consumer: high },
      { capacity, producer: high, consumer: low },
    ]);
    report(`duplex ping-pong echo: 10,000 round trips in ${client.elapsedMs.toFixed(0)} ms (${Math.round(10_000 / (client.elapsedMs / 1000)).toLocaleString('en-US')} round trips/s)`);
  });

  it('echo, pipelined through 1024-byte rings: 10,000 messages, in order', { timeout: 120_000 }, async () => {
    const { server, a, b } = await twoEnds('dx-pipe');
    const common = { offset: server.dataOffset, capacity: 1024, profile: 'small' };
    const serverSide = b.request({ cmd: 'duplex', other: a.id, role: 'echo-server', ...common });
    const client = await a.request({ cmd: 'duplex', other: b.id, role: 'echo-client', count: 10_000, seed: 6, ...common });
    const echo = await serverSide;
    expect(client.failure).toBeNull();
    expect(client.error).toBeNull();
    expect(client.sent).toBe(10_000);
    expect(client.received).toBe(10_000);
    expect(echo.echoed).toBe(10_000);
    report(`duplex pipelined echo: 10,000 messages there and back in ${client.elapsedMs.toFixed(0)} ms (${rate(10_000, client.elapsedMs)})`);
  });

  it('flood both ways at once through 512-byte rings, readers holding messages: no deadlock, nothing lost', { timeout: 180_000 }, async () => {
    const { server, a, b } = await twoEnds('dx-flood');
    const count = 100_000;
    const common = { offset: server.dataOffset, capacity: 512, profile: 'small', count, holdEvery: 100 };
    const [ra, rb] = await Promise.all([
      a.request({ cmd: 'duplex', other: b.id, role: 'flood', seed: 1, otherSeed: 2, ...common }),
      b.request({ cmd: 'duplex', other: a.id, role: 'flood', seed: 2, otherSeed: 1, ...common }),
    ]);
    for (const r of [ra, rb]) {
      expect(r.failure).toBeNull();
      expect(r.error).toBeNull();
      expect(r.sent).toBe(count);
      expect(r.received).toBe(count);
      // Each writer had to wait for space and was woken by the other side's reader.
      expect((r.counters as InterruptCounters).wakeups).toBeGreaterThan(0);
    }
    const ca = ra.counters as InterruptCounters;
    const cb = rb.counters as InterruptCounters;
    report(
      `duplex flood: ${count.toLocaleString('en-US')} each way; A ${rate(count, ra.elapsedMs)} in, B ${rate(count, rb.elapsedMs)} in; ` +
        `rings A ${ca.rings} (${((100 * ca.suppressed) / ca.rings).toFixed(1)}% suppressed), B ${cb.rings} (${((100 * cb.suppressed) / cb.rings).toFixed(1)}% suppressed); ` +
        `wakeups A ${ca.wakeups}, B ${cb.wakeups}`,
    );
  });
});
