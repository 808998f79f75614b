/**
 * One clock for every process of a run: nanoseconds since the parent's epoch on
 * CLOCK_MONOTONIC (process.hrtime), read through performance.now() (the same clock in Node,
 * and cheaper than hrtime.bigint()), so a timestamp written by one process can be compared
 * with a read in another.
 */
import { performance } from 'node:perf_hooks';
import { setImmediate as immediate } from 'node:timers/promises';

export interface Clock {
  /** ns since the epoch. */
  now(): number;
}

export function clockFrom(epoch: bigint): Clock {
  // Calibrate performance.now() against hrtime: take the pair with the tightest bracket.
  let best = Infinity;
  let offsetMs = 0;
  for (let i = 0; i < 20; i++) {
    const a = performance.now();
    const h = process.hrtime.bigint();
    const b = performance.now();
    if (b - a < best) {
      best = b - a;
      offsetMs = Number(h - epoch) / 1e6 - (a + b) / 2;
    }
  }
  return { now: () => (performance.now() + offsetMs) * 1e6 };
}

export function epochNow(): bigint {
  return process.hrtime.bigint();
}

/** Busy work for `ns` nanoseconds (the stream consumer's per-message work). */
export function spin(ns: number): void {
  const until = performance.now() + ns / 1e6;
  while (performance.now() < until) {
    // busy
  }
}

/** A few event-loop turns and a short sleep: lets eventfds already written be seen and handled. */
export async function settle(ms = 5): Promise<void> {
  for (let i = 0; i < 3; i++) await immediate();
  await new Promise((resolve) => setTimeout(resolve, ms));
  for (let i = 0; i < 3; i++) await immediate();
}
