/**
 * The harness around the cells: a cell past its deadline fails with a clear error and leaves
 * no process or socket behind, the baselines and micro benchmarks produce every contract name
 * in the right units, and a missing C compiler makes that baseline unavailable, not a crash.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cEventfdPingPong, compileBaseline, cVariants } from '../../bench/c-baseline.js';
import { runMicro } from '../../bench/micro.js';
import { ratios, renderReport } from '../../bench/report.js';
import { runBench } from '../../bench/run.js';
import { assertWorkersBuilt, numbersIn } from './helpers.js';

beforeAll(() => assertWorkersBuilt());

/** Live child processes of this process (from /proc). */
function children(): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === process.pid && fields[0] !== 'Z') out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const ownSockets = (): string[] => readdirSync(tmpdir()).filter((f) => f.startsWith(`ivbench-`) && f.includes(`-${process.pid}-`));

let hasCompiler = true;
beforeAll(async () => {
  try {
    await compileBaseline();
  } catch {
    hasCompiler = false;
  }
});

afterEach(() => {
  expect(children()).toEqual([]);
  expect(ownSockets()).toEqual([]);
});

describe('deadlines', () => {
  it('a cell past its deadline fails with a clear error; the run goes on with fresh workers', async () => {
    const report = await runBench({
      vm: false,
      workloads: ['ping-pong', 'stream'],
      designs: ['qemu'],
      messages: 50_000_000,
      timeoutMs: 500,
      micro: false,
      baselines: false,
    });
    expect(report.results).toHaveLength(2);
    for (const r of report.results) {
      expect(r.error).toMatch(/timed out after 0\.5 s waiting for .*qemu/);
      expect(r.msgsPerSec).toBeNull();
      expect(r.interceptsPerMsg).toBeNull();
    }
  });
});

describe('baselines', () => {
  it('runs every baseline of the contract, in the contract units', async () => {
    const report = await runBench({
      vm: false,
      workloads: [],
      micro: false,
      baselines: true,
      baselineRoundTrips: 300,
      baselineStreamMessages: 3000,
      timeoutMs: 30_000,
    });
    const names = report.baselines.map((b) => b.name);
    for (const name of ['c-eventfd-pingpong', 'node-unix-socket-pingpong', 'node-unix-socket-stream', 'ivshmem-pingpong', 'ivshmem-pingpong-busypoll', 'ivshmem-channel-stream']) {
      expect(names).toContain(name);
    }
    const byName = new Map(report.baselines.map((b) => [b.name, b]));
    for (const name of ['node-unix-socket-pingpong', 'ivshmem-pingpong', 'ivshmem-pingpong-busypoll']) {
      const b = byName.get(name)!;
      expect(b.available, `${name}: ${b.reason}`).toBe(true);
      expect(b.rttP50Us!).toBeGreaterThan(0);
      expect(b.rttP99Us!).toBeGreaterThanOrEqual(b.rttP50Us!);
      expect(b.msgsPerSec!).toBeGreaterThan(0);
      expect(b.messages).toBe(600);
    }
    for (const name of ['node-unix-socket-stream', 'ivshmem-channel-stream']) {
      const b = byName.get(name)!;
      expect(b.available, `${name}: ${b.reason}`).toBe(true);
      expect(b.msgsPerSec!).toBeGreaterThan(0);
      expect(b.messages).toBe(3000);
    }
    // Every stream cell ran the messages through; the channel's intercepts split by direction.
    const channels = ['ivshmem-channel-stream', 'ivshmem-channel-stream-busypoll', 'ivshmem-channel-stream-single', 'ivshmem-channel-stream-busy-consumer'];
    for (const name of [...channels, 'js-ring-stream', ...(hasCompiler ? ['c-ring-stream'] : [])]) {
      const b = byName.get(name);
      expect(b?.available, `${name}: ${b?.reason}`).toBe(true);
      expect(b!.msgsPerSec!).toBeGreaterThan(0);
    }
    for (const name of channels) {
      const b = byName.get(name)!;
      expect(b.messages).toBe(3000);
      expect(b.dataInterceptsPerMsg! + b.spaceInterceptsPerMsg!).toBeCloseTo(b.interceptsPerMsg!, 5);
    }
    // The report prints each channel stream as a fraction of both ceilings, and against the socket.
    const lines = ratios(report);
    for (const ceiling of ['js-ring-stream', ...(hasCompiler ? ['c-ring-stream'] : [])]) {
      const line = lines.find((l) => l.against === ceiling)!;
      const c = byName.get(ceiling)!;
      expect(line.values.map((v) => v.name)).toEqual(['ivshmem-channel-stream', 'ivshmem-channel-stream-busypoll', 'ivshmem-channel-stream-single']);
      for (const v of line.values) expect(v.ratio).toBeCloseTo(byName.get(v.name)!.msgsPerSec! / c.msgsPerSec!, 9);
    }
    const socket = lines.find((l) => l.against === 'node-unix-socket-stream')!;
    expect(socket.values.map((v) => v.name)).toContain('ivshmem-channel-stream-busypoll');
    expect(renderReport(report)).toMatch(/intercepts\/msg by direction/);
    // A ping-pong over the bitmask: at most one signal and one interrupt per message.
    expect(byName.get('ivshmem-pingpong')!.interceptsPerMsg!).toBeLessThanOrEqual(2);
    // Busy-polling receivers keep their bits set: never more than the blocking ones.
    expect(byName.get('ivshmem-pingpong-busypoll')!.interceptsPerMsg!).toBeLessThanOrEqual(2);
    const c = byName.get('c-eventfd-pingpong')!;
    if (hasCompiler) {
      expect(c.available, c.reason).toBe(true);
      expect(c.rttP50Us!).toBeGreaterThan(0);
    } else {
      expect(c.available).toBe(false);
      expect(c.reason).toMatch(/compiler/);
    }
    for (const { path, value } of numbersIn(report.baselines)) {
      expect(Number.isFinite(value), path).toBe(true);
      expect(value, path).toBeGreaterThanOrEqual(0);
    }
  });

  it('without a C compiler, the C baseline is unavailable with the reason (no crash)', async () => {
    const result = await cEventfdPingPong(100, cVariants(true)[0]!, '/nonexistent/cc-for-the-test');
    expect(result.available).toBe(false);
    expect(result.reason).toMatch(/no C compiler: '\/nonexistent\/cc-for-the-test' not found/);
    expect(result.rttP50Us).toBeNull();
  });

  it('the C ping-pong reports its placement and a round trip', async (ctx) => {
    if (!hasCompiler) ctx.skip();
    for (const variant of cVariants(true)) {
      const r = await cEventfdPingPong(200, variant);
      expect(r.available, r.reason).toBe(true);
      expect(r.rttP50Us!).toBeGreaterThan(0);
      expect(r.messages).toBe(400);
      expect(['one CPU each', 'same CPU', 'scheduler']).toContain(r.placement);
    }
  });
});

describe('micro benchmarks', () => {
  it('measures every contract name per op, in batches', async () => {
    const micro = await runMicro({ timeMs: 20 });
    const names = micro.map((m) => m.name);
    for (const name of ['ring-suppressed', 'ring-signalled', 'atomics-or', 'eventfd-write']) expect(names).toContain(name);
    for (const m of micro) {
      expect(m.p50Ns, m.name).toBeGreaterThan(0);
      expect(m.p99Ns, m.name).toBeGreaterThanOrEqual(m.p50Ns);
      expect(m.batch).toBeGreaterThanOrEqual(100);
      expect(m.samples).toBeGreaterThan(0);
    }
    const byName = new Map(micro.map((m) => [m.name, m]));
    // A suppressed ring makes no system call; a signalled one does (an eventfd write).
    expect(byName.get('ring-suppressed')!.p50Ns).toBeLessThan(byName.get('ring-signalled')!.p50Ns);
  });
});
