/**
 * A lease word kept by a native thread (native/lease.cc): advanced every `intervalMs` while this
 * process lives, whatever its event loop is doing, and cleared by stop(). Its thread maps the one
 * page of the word itself, so it can never touch memory its owner has unmapped. The thread is
 * named `ivshmem-lease` (top -H, gdb, /proc/PID/task/N/comm).
 */
import { native, type NativeLease } from './binding.js';
import * as check from '../core/validate.js';

const PAGE = 4096;

export class LeaseKeeper implements Disposable {
  readonly #native: NativeLease;

  /** The u32 at byte `offset` of the object that `fd` maps from `fileOffset` (page aligned) on. */
  constructor(fd: number, fileOffset: number, offset: number, intervalMs: number) {
    check.fd('fd', fd);
    check.integer('fileOffset', fileOffset, 0);
    check.integer('offset', offset, 0);
    if (offset % 4 !== 0) throw new RangeError(`a lease word is 4-byte aligned, got offset ${offset}`);
    const inPage = offset % PAGE;
    this.#native = new native.Lease(fd, fileOffset + offset - inPage, inPage, check.integer('intervalMs', intervalMs, 1, 2 ** 31 - 1));
  }

  get stopped(): boolean {
    return this.#native.stopped;
  }

  /** Stops renewing and clears the word (the lease is released: gone at once). Idempotent. */
  stop(): void {
    this.#native.stop();
  }

  [Symbol.dispose](): void {
    this.stop();
  }
}
