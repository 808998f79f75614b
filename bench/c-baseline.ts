/**
 * The C eventfd ping-pong baseline (bench/c/eventfd-pingpong.c): compiled at bench time with
 * `$CC -O2` (default `cc`) into the cache folder, keyed by a hash of the source and the
 * compiler, and run as two processes. Without a compiler (or if it fails) the baseline is
 * reported unavailable, with the reason; the bench goes on.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { basename, join } from 'node:path';
import { cacheDir, packageRoot } from './paths.js';
import type { BaselineResult } from './types.js';

export const C_SOURCE = join('bench', 'c', 'eventfd-pingpong.c');
const C_HEADER = join('bench', 'c', 'common.h');

interface CRun {
  roundTrips: number;
  mode: string;
  placement: string;
  rttP50Ns: number;
  rttP99Ns: number;
  rttMeanNs: number;
  elapsedNs: number;
}

function run(file: string, args: string[], timeoutMs: number): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
      if (error) reject(Object.assign(error, { stderr }));
      else resolve({ stdout, stderr });
    });
  });
}

export function compilerName(): string {
  return process.env.CC !== undefined && process.env.CC.trim() !== '' ? process.env.CC.trim() : 'cc';
}

/**
 * Compiles a C program of bench/ (default: the eventfd baseline) once per source and compiler;
 * returns the binary's path, or throws with a readable reason.
 */
export async function compileBaseline(cc = compilerName(), file = C_SOURCE): Promise<string> {
  const source = join(packageRoot(), file);
  if (!existsSync(source)) throw new Error(`${source} is missing (the C source ships in bench/c/)`);
  const text = readFileSync(source);
  // The shared header is part of every program: a change to it must rebuild them.
  const header = readFileSync(join(packageRoot(), C_HEADER));
  const hash = createHash('sha256').update(text).update('\0').update(header).update('\0').update(cc).digest('hex').slice(0, 16);
  const binary = join(cacheDir(), `${basename(file, '.c')}-${hash}`);
  if (existsSync(binary)) return binary;
  const partial = `${binary}.${process.pid}.tmp`;
  try {
    await run(cc, ['-O2', '-o', partial, source], 120_000);
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') {
      throw new Error(`no C compiler: '${cc}' not found on PATH (install one, e.g. apt-get install -y gcc, or set CC)`);
    }
    throw new Error(`'${cc} -O2' failed: ${(e.stderr ?? e.message).trim().split('\n').slice(0, 5).join(' / ')}`);
  }
  renameSync(partial, binary);
  return binary;
}

export type CPlacement = 'cross' | 'same' | 'none';

export interface CVariant {
  name: string;
  mode: 'block' | 'epoll';
  placement: CPlacement;
  description: string;
}

const PLACEMENT_TEXT: Record<CPlacement, string> = {
  cross: 'one CPU each',
  same: 'same CPU',
  none: 'scheduler',
};

/** The C variants of a run: blocking read and epoll, on two CPUs (or unpinned), plus the same-CPU reference. */
export function cVariants(pin: boolean): CVariant[] {
  const placement: CPlacement = pin ? 'cross' : 'none';
  const where = pin ? 'pinned to two CPUs' : 'placed by the scheduler';
  const list: CVariant[] = [
    { name: 'c-eventfd-pingpong', mode: 'block', placement, description: `C, two processes ${where}, eventfd write + blocking read(2) each way` },
    { name: 'c-eventfd-epoll-pingpong', mode: 'epoll', placement, description: `C, two processes ${where}, eventfd write + epoll_wait(2) + read(2) each way (as an event loop waits)` },
  ];
  if (pin) {
    list.push({
      name: 'c-eventfd-pingpong-same-cpu',
      mode: 'block',
      placement: 'same',
      description: 'C, two processes pinned to ONE CPU, eventfd write + blocking read(2): a context switch instead of a cross-CPU wakeup (reference only)',
    });
  }
  return list;
}

/** Runs one C variant; an unavailable result (with the reason) instead of throwing. */
export async function cEventfdPingPong(roundTrips: number, variant: CVariant, cc = compilerName()): Promise<BaselineResult> {
  const { name, description } = variant;
  const missing = (reason: string): BaselineResult => ({ name, available: false, reason, rttP50Us: null, rttP99Us: null, msgsPerSec: null, description });
  let binary: string;
  try {
    binary = await compileBaseline(cc);
  } catch (error) {
    return missing((error as Error).message);
  }
  try {
    const { stdout } = await run(binary, [String(roundTrips), variant.mode, variant.placement], 60_000);
    const r = JSON.parse(stdout.trim()) as CRun;
    return {
      name,
      available: true,
      rttP50Us: Number((r.rttP50Ns / 1000).toFixed(3)),
      rttP99Us: Number((r.rttP99Ns / 1000).toFixed(3)),
      msgsPerSec: Math.round((2 * r.roundTrips) / (r.elapsedNs / 1e9)),
      messages: 2 * r.roundTrips,
      placement: PLACEMENT_TEXT[(r.placement as CPlacement) ?? 'none'] ?? r.placement,
      description,
    };
  } catch (error) {
    return missing(`the compiled baseline failed: ${(error as Error).message}`);
  }
}

export const C_RING_SOURCE = join('bench', 'c', 'shm-ring-stream.c');

/**
 * The C ring (bench/c/shm-ring-stream.c): the channel's record format between two processes
 * over a memfd, head and tail once per batch, both spinning; the ceiling of the memory itself.
 */
export async function cRingStream(messages: number, size: number, pin: boolean, cc = compilerName()): Promise<BaselineResult> {
  const name = 'c-ring-stream';
  const description = `C, the channel's record format (${size}-byte payloads, 64 KiB) over a memfd between two processes${pin ? ' pinned to two CPUs' : ''}, head published and tail stored once per batch, both spinning`;
  const missing = (reason: string): BaselineResult => ({ name, available: false, reason, rttP50Us: null, rttP99Us: null, msgsPerSec: null, description });
  let binary: string;
  try {
    binary = await compileBaseline(cc, C_RING_SOURCE);
  } catch (error) {
    return missing((error as Error).message);
  }
  try {
    const { stdout } = await run(binary, [String(messages), String(size), pin ? 'cross' : 'none'], 60_000);
    const r = JSON.parse(stdout.trim()) as { messages: number; placement: string; elapsedNs: number };
    return {
      name,
      available: true,
      rttP50Us: null,
      rttP99Us: null,
      msgsPerSec: Math.round(r.messages / (r.elapsedNs / 1e9)),
      messages: r.messages,
      placement: r.placement === 'cross' ? PLACEMENT_TEXT.cross : PLACEMENT_TEXT.none,
      description,
    };
  } catch (error) {
    return missing(`the compiled baseline failed: ${(error as Error).message}`);
  }
}
