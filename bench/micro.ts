/**
 * Micro benchmarks of the ring's parts, with tinybench, in this process (one server, two
 * peers). tinybench's per-task overhead (~40 ns) would swamp a ~15 ns operation, so every task
 * runs a batch of operations in a loop and the per-op time is the sample's time / batch size;
 * p50 and p99 are the percentiles of those per-batch averages.
 */
import { performance } from 'node:perf_hooks';
import { Bench } from 'tinybench';
import { BitmaskDoorbell, Peer, PeerServer } from '../lib/index.js';
import { EventFd } from '../lib/sys/index.js';
import { BitmaskDevice } from '../lib/devices/index.js';
import { native } from '../lib/sys/binding.js';
import { uniqueSocketPath } from './paths.js';
import type { MicroResult } from './types.js';

export const MICRO_NAMES = [
  'native-call',
  'atomics-or',
  'ring-suppressed',
  'ring-signalled',
  'eventfd-write',
  'eventfd-drain',
  'eventfd-drain-empty',
] as const;
export type MicroName = (typeof MICRO_NAMES)[number];

interface MicroTask {
  name: MicroName;
  batch: number;
  description: string;
  /** One sample: runs `batch` operations; returns the measured ms if it times only part of it. */
  fn: () => number | void;
}

export interface MicroOptions {
  /** tinybench time budget per task, ms. */
  timeMs: number;
  /** Called before each task starts. */
  onTask?: (name: string, index: number, total: number) => void;
}

/** Cost of one performance.now() pair, for the tasks that time a part of each op. */
function timerPairMs(): number {
  let best = Infinity;
  for (let round = 0; round < 20; round++) {
    const t0 = performance.now();
    for (let i = 0; i < 1000; i++) {
      const a = performance.now();
      const b = performance.now();
      if (b < a) throw new Error('clock went backwards');
    }
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  // One pair ≈ two calls; what a timed region pays is about one call.
  return best / 2;
}

export async function runMicro(options: MicroOptions): Promise<MicroResult[]> {
  const server = PeerServer.listen({ socketPath: uniqueSocketPath('micro'), bitmask: true, size: 1 << 20 });
  const closers: (() => void)[] = [() => server.close()];
  try {
    const a = await Peer.connect(server.socketPath, { bitmask: true });
    closers.unshift(() => a.close());
    const b = await Peer.connect(server.socketPath, { bitmask: true });
    closers.unshift(() => b.close());
    await a.waitForPeer(b.id);
    await b.waitForPeer(a.id);

    const words = new Int32Array(a.shm.buffer, server.dataOffset, 16);
    const sender = new BitmaskDoorbell(a);
    closers.unshift(() => sender.close());
    const receiver = new BitmaskDevice(b);
    closers.unshift(() => receiver.close());
    const plain = new EventFd();
    closers.unshift(() => plain.close());
    const pair = new EventFd();
    closers.unshift(() => pair.close());
    const empty = new EventFd();
    closers.unshift(() => empty.close());
    const timerMs = timerPairMs();
    const target = b.id;

    const tasks: MicroTask[] = [
      {
        name: 'native-call',
        batch: 1000,
        description: 'one plain node-addon-api function call that does no work (liveResources(): reads a counter): the price of crossing into C++',
        fn: () => {
          for (let i = 0; i < 1000; i++) native.liveResources();
        },
      },
      {
        name: 'atomics-or',
        batch: 1000,
        description: 'Atomics.or on an Int32Array over the shared memory (the fast path\'s one instruction, bare JS)',
        fn: () => {
          for (let i = 0; i < 1000; i++) Atomics.or(words, 0, 1);
        },
      },
      {
        name: 'ring-suppressed',
        batch: 1000,
        description: 'BitmaskDoorbell.ring to a peer whose bit is already set: no system call',
        fn: () => {
          for (let i = 0; i < 1000; i++) sender.ring(target);
        },
      },
      {
        name: 'ring-signalled',
        batch: 100,
        description: 'BitmaskDoorbell.ring that makes the 0->1 edge (eventfd write), plus the receiver\'s clear (BitmaskDevice PendingClear write) in the same process',
        fn: () => {
          for (let i = 0; i < 100; i++) {
            sender.ring(target);
            receiver.writel('PendingClear', 1);
          }
        },
      },
      {
        name: 'eventfd-write',
        batch: 100,
        description: 'EventFd.signal(1): one write(2) on an eventfd nobody waits on',
        fn: () => {
          for (let i = 0; i < 100; i++) plain.signal(1);
        },
      },
      {
        name: 'eventfd-drain',
        batch: 100,
        description: 'EventFd.drain() of a signalled eventfd (one read(2)); each drain timed alone (performance.now, one call\'s cost subtracted)',
        fn: () => {
          let ms = 0;
          for (let i = 0; i < 100; i++) {
            pair.signal(1);
            const t0 = performance.now();
            pair.drain();
            ms += performance.now() - t0 - timerMs;
          }
          return Math.max(0, ms);
        },
      },
      {
        name: 'eventfd-drain-empty',
        batch: 100,
        description: 'EventFd.drain() of an eventfd with nothing pending (read(2) -> EAGAIN: what a spurious wakeup costs)',
        fn: () => {
          for (let i = 0; i < 100; i++) empty.drain();
        },
      },
    ];

    // Put the receiver's bit up so that every timed ring-suppressed is suppressed.
    sender.ring(target);

    const results: MicroResult[] = [];
    for (const [index, task] of tasks.entries()) {
      options.onTask?.(task.name, index, tasks.length);
      if (task.name === 'ring-suppressed') sender.ring(target);
      const bench = new Bench({
        name: task.name,
        time: options.timeMs,
        warmupTime: Math.max(20, options.timeMs / 4),
        iterations: 32,
        throws: true,
      });
      bench.add(task.name, () => {
        const measured = task.fn();
        return typeof measured === 'number' ? { overriddenDuration: measured } : undefined;
      });
      const countersBefore = a.counters();
      bench.runSync();
      if (task.name === 'ring-suppressed') {
        const after = a.counters();
        const rings = after.rings - countersBefore.rings;
        const suppressed = after.suppressed - countersBefore.suppressed;
        if (rings !== suppressed) throw new Error(`ring-suppressed: ${rings - suppressed} of ${rings} rings were not suppressed`);
      }
      const result = bench.tasks[0]!.result;
      if (result.state !== 'completed') {
        throw new Error(`micro ${task.name}: ${result.state === 'errored' ? result.error.message : result.state}`);
      }
      const perOp = (ms: number): number => Number(((ms * 1e6) / task.batch).toFixed(2));
      results.push({
        name: task.name,
        p50Ns: perOp(result.latency.p50),
        p99Ns: perOp(result.latency.p99),
        meanNs: perOp(result.latency.mean),
        batch: task.batch,
        samples: result.latency.samplesCount,
        description: task.description,
      });
      // Let the receiver's watcher drain what the signalled rings wrote.
      await new Promise((resolve) => setImmediate(resolve));
    }
    return results;
  } finally {
    for (const close of closers) {
      try {
        close();
      } catch {
        // best effort
      }
    }
  }
}
