/**
 * The busy poll of every `busyPollMicros` option (doorbell receivers, channel consumers and
 * producers): look at shared memory instead of sleeping on the doorbell, for a bounded time.
 */
import { performance } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';

/**
 * Longest synchronous stretch of a poll before the event loop gets a turn (µs). A turn per
 * look would allocate a promise and an Immediate every ~3 µs: garbage that makes both ends of
 * a busy stream stop for scavenges; a slice looks every few hundred nanoseconds, allocating
 * nothing, and keeps the process's own I/O and timers waiting at most this long.
 */
export const POLL_SLICE_MICROS = 20;
/** Looks between two reads of the clock (the clock costs more than a look). */
const LOOKS_PER_CLOCK = 32;

/**
 * Calls `ready()` until it returns true (then true) or `micros` have passed or `stopped()`
 * (then false). Synchronous slices of POLL_SLICE_MICROS, one event-loop turn between them.
 */
export async function busyPoll(micros: number, ready: () => boolean, stopped: () => boolean): Promise<boolean> {
  const deadline = performance.now() + micros / 1000;
  for (;;) {
    const sliceEnd = Math.min(deadline, performance.now() + POLL_SLICE_MICROS / 1000);
    for (let looks = 1; ; looks++) {
      if (ready()) return true;
      if (looks % LOOKS_PER_CLOCK === 0 && performance.now() >= sliceEnd) break;
    }
    if (performance.now() >= deadline || stopped()) return false;
    await nextTurn();
    if (stopped()) return false;
  }
}
