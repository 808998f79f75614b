/**
 * Eventfds for the interrupt table's suites: a table gets its own fd number for each vector (it
 * adopts what it is given), and a saturated eventfd makes the write of a ring fail for real.
 */
import { native } from '../../lib/sys/binding.js';
import type { EventFd } from '../../lib/sys/index.js';

/** A new fd number on the same eventfd as `ev`, for a table to adopt. */
export function copyOf(ev: EventFd): number {
  return native.dupFd(ev.fd);
}

/**
 * Fills `ev`'s counter to its maximum (2^64 - 2): every further write(2) fails with EAGAIN, the
 * way an eventfd nobody drains ends up. 2048 writes of 2^53 - 1 leave it 2046 short of it.
 */
export function saturate(ev: EventFd): EventFd {
  for (let i = 0; i < 2048; i++) ev.signal(2 ** 53 - 1);
  ev.signal(2046);
  return ev;
}
