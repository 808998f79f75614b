/**
 * No lost wakeups, under load, across processes: a bitmask server in this process; receiver
 * processes serving with BitmaskDoorbell.serve(); 4 sender processes that publish messages
 * (a per-sender counter in shared memory, Atomics.add) and ring after each one. Every message
 * must be consumed.
 *
 * A watchdog here samples the counters in the server's shared memory: if work is outstanding
 * and nothing was consumed for 1 s, that is a lost wakeup (a receiver asleep with its bit set
 * suppresses every sender for good: it would wait forever) and the test fails with the pending
 * bits and the receivers' counters. That 1 s is a correctness bound, not a performance one.
 *
 * Cases: 1 receiver x 4 senders x 250,000 rings; 2 receivers each rung by all 4 senders; the
 * same with broadcast() instead of ring(); and closed loops (a sender waits for its message to
 * be consumed before the next: the regime that hits the receiver's drain-to-clear window and
 * that catches a receive loop without the re-check). The counters (suppressed fraction) are
 * printed.
 */
import { describe, expect, it } from 'vitest';
import type { InterruptCounters, PeerServer } from '../../lib/index.js';
import { JsonChild, killAllChildren } from '../helpers/children.js';
import { sumCounters } from '../helpers/resources.js';
import { waitFor, within } from '../helpers/wait.js';
import { bitIds, pendingBit, useResources } from './helpers.js';

const STRIDE = 16; // as test/fixtures/doorbell/stress-common.mjs
const STALL_MS = 1000;

const res = useResources();

interface Case {
  name: string;
  receivers: number;
  senders: number;
  /** Messages each sender publishes to each receiver. */
  messages: number;
  mode: 'ring' | 'broadcast';
  /** Senders wait for their messages to be consumed after each burst (see stress-sender.mjs). */
  closedLoop?: boolean;
  /** Largest burst of messages between pauses (default 64). */
  maxBurst?: number;
}

async function runCase(c: Case): Promise<void> {
  const server: PeerServer = res.listen('stress', { size: 1024 * 1024, bitmask: true });
  const layout = server.header!;
  const view = new Int32Array(server.shm.buffer, server.dataOffset, 2 * c.receivers * c.senders * STRIDE);
  const produced = (r: number, s: number): number => Atomics.load(view, (r * c.senders + s) * STRIDE);
  const consumed = (r: number, s: number): number => Atomics.load(view, (c.receivers * c.senders + r * c.senders + s) * STRIDE);
  const totals = (): { produced: number; consumed: number } => {
    let p = 0;
    let q = 0;
    for (let r = 0; r < c.receivers; r++) {
      for (let s = 0; s < c.senders; s++) {
        p += produced(r, s);
        q += consumed(r, s);
      }
    }
    return { produced: p, consumed: q };
  };
  const expectedPerReceiver = c.senders * c.messages;

  const receivers: JsonChild[] = [];
  for (let r = 0; r < c.receivers; r++) {
    const child = JsonChild.fixture(
      'doorbell/stress-receiver.mjs',
      { socketPath: server.socketPath, index: r, receivers: c.receivers, senders: c.senders, expected: expectedPerReceiver },
      `receiver #${r}`,
    );
    receivers.push(await child.whenReady());
  }
  const receiverIds = receivers.map((x) => x.id);
  const senders: JsonChild[] = [];
  for (let s = 0; s < c.senders; s++) {
    senders.push(
      JsonChild.fixture(
        'doorbell/stress-sender.mjs',
        { socketPath: server.socketPath, index: s, receivers: receiverIds, senders: c.senders, messages: c.messages, mode: c.mode, seed: 1 + s, closedLoop: c.closedLoop === true, maxBurst: c.maxBurst ?? 64 },
        `sender #${s}`,
      ),
    );
  }
  for (const child of senders) await child.waitForType('ready');

  // The watchdog: progress = anything consumed since the last sample.
  let last = totals();
  let lastProgress = Date.now();
  let maxStall = 0;
  let stalled: ((error: Error) => void) | null = null;
  const stall = new Promise<never>((_, reject) => {
    stalled = reject;
  });
  let sampling = false;
  const timer = setInterval(() => {
    if (sampling) return;
    const now = totals();
    const t = Date.now();
    if (now.consumed !== last.consumed || now.produced === now.consumed) {
      lastProgress = t;
    } else {
      maxStall = Math.max(maxStall, t - lastProgress);
    }
    last = now;
    if (now.produced > now.consumed && t - lastProgress > STALL_MS) {
      sampling = true;
      void (async () => {
        const states = await Promise.all(receivers.map((x) => x.request({ cmd: 'state' }, 5000).catch((e: Error) => ({ error: e.message }))));
        stalled?.(
          new Error(
            `lost wakeup? nothing consumed for ${t - lastProgress} ms with ${now.produced - now.consumed} messages outstanding.\n` +
              `pending bits (header): ${JSON.stringify(bitIds(server.shm.buffer, layout, 'pending'))}, receivers ${JSON.stringify(receiverIds)}\n` +
              `per receiver: ${JSON.stringify(receivers.map((_, r) => ({ produced: Array.from({ length: c.senders }, (_, s) => produced(r, s)), consumed: Array.from({ length: c.senders }, (_, s) => consumed(r, s)) })))}\n` +
              `receiver states: ${JSON.stringify(states)}`,
          ),
        );
      })();
    }
  }, 20);

  const started = performance.now();
  try {
    for (const child of senders) child.send({ cmd: 'go' });
    const timeout = 120_000;
    const sendersDone = await Promise.race([Promise.all(senders.map((x) => x.waitForType('done', timeout))), stall]);
    const receiversDone = await Promise.race([Promise.all(receivers.map((x) => x.waitForType('done', timeout))), stall]);
    const elapsed = performance.now() - started;

    // Every message seen, from every sender, by every receiver.
    for (let r = 0; r < c.receivers; r++) {
      for (let s = 0; s < c.senders; s++) {
        expect(produced(r, s), `produced ${r}/${s}`).toBe(c.messages);
        expect(consumed(r, s), `consumed ${r}/${s}`).toBe(c.messages);
      }
      expect(receiversDone[r]!.consumed).toBe(expectedPerReceiver);
    }
    expect(totals().consumed).toBe(c.receivers * expectedPerReceiver);

    const sc = sendersDone.map((m) => m.counters as InterruptCounters);
    const st = sumCounters(sc);
    const calls = sendersDone.reduce((n, m) => n + (m.calls as number), 0);
    const edges = sendersDone.reduce((n, m) => n + (m.edges as number), 0);
    if (c.mode === 'ring') {
      expect(calls).toBe(c.senders * c.messages * c.receivers);
      expect(st.rings).toBe(calls);
      expect(st.signals).toBe(edges);
    } else {
      expect(calls).toBe(c.senders * c.messages);
      // Each broadcast addresses every other live peer: the receivers and the other senders.
      expect(st.rings).toBe(calls * (c.receivers + c.senders - 1));
      expect(st.signals).toBe(edges);
    }
    expect(st.signals + st.suppressed).toBe(st.rings);
    expect(st.eventfdWrites).toBe(st.signals);

    // Afterwards: every receiver asleep with its bit clear; in ring mode every eventfd write
    // made to a receiver was drained by it exactly once (nothing lost in the kernel either).
    const states = await waitFor(
      async () => {
        const list = await Promise.all(receivers.map((x) => x.request({ cmd: 'state' })));
        const quiet = list.every((m) => m.pending === false) && receiverIds.every((id) => !pendingBit(server.shm.buffer, layout, id));
        const drained = list.reduce((n, m) => n + (m.drained as number), 0);
        return quiet && (c.mode !== 'ring' || drained === st.signals) ? list : null;
      },
      'the receivers to be idle with their bits clear (and, in ring mode, to have drained every signal)',
    );
    const rc = sumCounters(states.map((m) => m.counters as InterruptCounters));
    const fraction = st.suppressed / st.rings;
    console.log(
      `[stress ${c.name}] ${c.senders} senders x ${c.messages} messages x ${c.receivers} receiver(s), ${c.mode}: ` +
        `${(elapsed / 1000).toFixed(2)} s; rings ${st.rings}, suppressed ${st.suppressed} (${(100 * fraction).toFixed(2)}%), ` +
        `signals ${st.signals}; receivers: wakeups ${rc.wakeups}, interrupts ${rc.interrupts}, spurious ${rc.spurious}, ` +
        `acks ${rc.acks}, batches ${states.reduce((n, m) => n + (m.batches as number), 0)}; ` +
        `longest stretch without progress seen by the watchdog: ${maxStall} ms`,
    );
    expect(rc.interrupts + rc.spurious).toBe(rc.wakeups);
  } finally {
    clearInterval(timer);
    stall.catch(() => {});
    // Server first: nothing to announce when the children go.
    server.close();
    for (const child of [...senders, ...receivers]) child.proc.stdin!.end();
    // A sender still spinning (after a failure) never reads its stdin: SIGKILL what is left.
    const all = [...senders, ...receivers];
    await within(Promise.all(all.map((x) => x.exited)), 'the children to exit', 5_000).catch(() => killAllChildren());
  }
}

describe('bitmask doorbell under stress: no lost wakeups', () => {
  it('1 receiver, 4 senders x 250,000 rings', { timeout: 180_000 }, async () => {
    await runCase({ name: 'fan-in', receivers: 1, senders: 4, messages: 250_000, mode: 'ring' });
  });

  it('2 receivers, each rung by all 4 senders x 250,000', { timeout: 180_000 }, async () => {
    await runCase({ name: 'fan-in x2', receivers: 2, senders: 4, messages: 250_000, mode: 'ring' });
  });

  it('2 receivers, 4 senders x 250,000 broadcasts', { timeout: 180_000 }, async () => {
    await runCase({ name: 'broadcast', receivers: 2, senders: 4, messages: 250_000, mode: 'broadcast' });
  });

  // Request/response: each sender publishes again as soon as its last message is consumed,
  // which lands in the receiver's window between its last look at the work and its clear
  // often. A receive loop without the re-check strands a message there, and nobody rescues it.
  it('closed loop: 1 receiver, 1 sender that waits for each message to be consumed', { timeout: 180_000 }, async () => {
    await runCase({ name: 'closed loop', receivers: 1, senders: 1, messages: 100_000, mode: 'ring', closedLoop: true, maxBurst: 1 });
  });

  it('closed loop: 2 receivers, 4 senders each waiting for both', { timeout: 180_000 }, async () => {
    await runCase({ name: 'closed loop x4', receivers: 2, senders: 4, messages: 25_000, mode: 'ring', closedLoop: true, maxBurst: 4 });
  });
});
