/**
 * One bench run: the matrix (every workload shape × every design, cells of one shape on one
 * server and one set of connected workers), then the baselines, then the micro benchmarks, then
 * the workloads in a real VM (vm/run-vm.ts; `--vm` runs that part alone).
 * Returns the report (the JSON contract); printing and files are the caller's (cli.ts).
 *
 * A cell that fails (its deadline passed, a worker died, a lane check failed) is reported
 * with its error and null figures; its workers are killed and the next cell starts afresh.
 */
import { runSessionBaseline, SESSION_BASELINES, unavailable } from './baselines.js';
import { cEventfdPingPong, compilerName, cRingStream, cVariants } from './c-baseline.js';
import { epochNow } from './clock.js';
import { machineInfo } from './machine.js';
import { cellResult, cellsOf, failedCell, planCell, shapesOf, type CellSpec } from './matrix.js';
import { MICRO_NAMES, runMicro } from './micro.js';
import { resolveOptions } from './options.js';
import { BenchError, WorkerPool } from './pool.js';
import { Progress } from './progress.js';
import { Session } from './session.js';
import type { BaselineResult, BenchOptions, BenchReport, CellResult, MicroResult, VmReport } from './types.js';
import { runVm } from './vm/run-vm.js';

export interface RunHooks {
  progress?: Progress;
  /** Aborting kills the workers and ends the run with a BenchError. */
  signal?: AbortSignal;
}

export function cellLabel(cell: Pick<CellSpec, 'workload' | 'n' | 'design'>): string {
  const n = cell.workload === 'fan-in' ? ` ×${cell.n} producers` : cell.workload === 'broadcast' ? ` to ${cell.n}` : '';
  return `${cell.workload}${n} · ${cell.design}`;
}

const fmt = (n: number | null, digits = 0): string =>
  n === null ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export async function runBench(input: BenchOptions = {}, hooks: RunHooks = {}): Promise<BenchReport> {
  const resolved = resolveOptions(input);
  // --vm: the VM part alone.
  const options = resolved.vm === 'only' ? { ...resolved, workloads: [], baselines: false, micro: false } : resolved;
  const started = Date.now();
  const epoch = epochNow();
  const progress = hooks.progress ?? new Progress(process.stderr, { quiet: true });
  const signal = hooks.signal;
  const shapes = shapesOf(options);
  const plan = shapes.map((shape) => ({ shape, cells: cellsOf(shape, options) }));
  const cellCount = plan.reduce((n, p) => n + p.cells.length, 0);
  const baselineSteps = options.baselines ? cVariants(options.pin).length + 1 + SESSION_BASELINES.length : 0;
  const microSteps = options.micro ? MICRO_NAMES.length : 0;
  progress.start(cellCount + baselineSteps + microSteps);

  const pool = new WorkerPool();
  const onAbort = (): void => {
    void pool.killAll();
  };
  signal?.addEventListener('abort', onAbort);
  const checkAbort = (): void => {
    if (signal?.aborted) throw new BenchError('interrupted');
  };

  let pinNoted = false;
  const notePin = (session: Session): void => {
    if (session.pinError !== null && !pinNoted) {
      pinNoted = true;
      progress.note(`cannot pin the workers to CPUs (${session.pinError}): running unpinned; latencies then depend on where the scheduler puts them`);
    }
  };

  // The session in use, whatever happens: closed (its server and socket file gone) in `finally`.
  let current: Session | null = null;
  const openSession = async (n: number): Promise<Session> => {
    current = await Session.open(pool, n, options.timeoutMs, options.pin);
    notePin(current);
    return current;
  };
  const discardSession = async (): Promise<void> => {
    current?.abandon();
    current = null;
    await pool.killAll();
  };
  const closeSession = async (): Promise<void> => {
    await current?.close();
    current = null;
  };

  const results: CellResult[] = [];
  const baselines: BaselineResult[] = [];
  let micro: MicroResult[] = [];
  let vm: VmReport | undefined;
  try {
    // ---------------------------------------------------------------- the matrix
    for (const { shape, cells } of plan) {
      for (const cell of cells) {
        checkAbort();
        progress.step(cellLabel(cell));
        try {
          const session = current ?? (await openSession(shape.processes));
          const runPlan = planCell(cell, cell.design, session.ids, session.dataOffset, session.dataEnd, options.slots);
          const outcome = await session.run(runPlan, options.timeoutMs, epoch);
          const result = cellResult(cell, outcome, session.placement);
          results.push(result);
          progress.done(`${fmt(result.msgsPerSec)} msg/s, ${fmt(result.interceptsPerMsg, 3)} intercepts/msg`);
        } catch (error) {
          checkAbort();
          const message = messageOf(error);
          results.push(failedCell(cell, message));
          progress.note(`✗ ${cellLabel(cell)} failed: ${message.split('\n')[0]}`);
          await discardSession();
        }
      }
      await closeSession();
    }

    // ---------------------------------------------------------------- baselines
    if (options.baselines) {
      for (const [i, variant] of cVariants(options.pin).entries()) {
        checkAbort();
        progress.step(`baseline ${variant.name}${i === 0 ? ' (compiled once with cc -O2)' : ''}`);
        const b = await cEventfdPingPong(options.baselineRoundTrips, variant);
        baselines.push(b);
        if (b.available) progress.done(`${fmt(b.rttP50Us ?? null, 1)} µs RTT`);
        else progress.note(`baseline ${b.name} unavailable: ${b.reason}`);
      }
      checkAbort();
      progress.step('baseline c-ring-stream');
      const ring = await cRingStream(options.baselineStreamMessages * 10, 64, options.pin);
      baselines.push(ring);
      if (ring.available) progress.done(`${fmt(ring.msgsPerSec ?? null)} msg/s`);
      else progress.note(`baseline c-ring-stream unavailable: ${ring.reason}`);
      for (const step of SESSION_BASELINES) {
        checkAbort();
        progress.step(`baseline ${step}`);
        try {
          const session = current ?? (await openSession(2));
          const result = { ...(await runSessionBaseline(step, session, options, options.timeoutMs, epoch)), placement: session.placement };
          baselines.push(result);
          progress.done(result.rttP50Us != null ? `${fmt(result.rttP50Us, 1)} µs RTT` : `${fmt(result.msgsPerSec ?? null)} msg/s`);
        } catch (error) {
          checkAbort();
          const message = messageOf(error);
          baselines.push(unavailable(step, `failed: ${message.split('\n')[0]}`));
          progress.note(`✗ baseline ${step} failed: ${message.split('\n')[0]}`);
          await discardSession();
        }
      }
      await closeSession();
    }

    // ---------------------------------------------------------------- micro (in this process)
    if (options.micro) {
      checkAbort();
      let first = true;
      micro = await runMicro({
        timeMs: options.microTimeMs,
        onTask: (name) => {
          if (!first) progress.done();
          first = false;
          checkAbort();
          progress.step(`micro ${name}`);
        },
      });
      progress.done();
      checkAbort();
    }

    // ---------------------------------------------------------------- in a real VM
    if (options.vm !== false) {
      checkAbort();
      vm = await runVm(options, { progress, ...(signal ? { signal } : {}) });
      checkAbort();
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    (current as Session | null)?.abandon();
    await pool.close();
    progress.finish();
  }

  return {
    machine: machineInfo(options.baselines ? compilerName() : null),
    options,
    results,
    micro,
    baselines,
    durationMs: Date.now() - started,
    ...(vm !== undefined ? { vm } : {}),
  };
}
