/** Raw fd helpers for fds received over a socket that no wrapper has adopted. */
import { native } from './binding.js';
import * as check from '../core/validate.js';

/** Closes an fd that this process owns but no wrapper holds (e.g. one it will not adopt). */
export function closeFd(fd: number): void {
  native.closeFd(check.fd('fd', fd));
}

/** A copy of `fd` (close-on-exec), the caller's to close: for a second owner of the same file. */
export function dupFd(fd: number): number {
  return native.dupFd(check.fd('fd', fd));
}

/**
 * One slot of the fd table held in reserve (an fd on /dev/null), as libuv does for EMFILE: when
 * the table is full, `release()` frees the slot so that one more fd can be had (to accept a
 * connection only to close it), and `restore()` takes it back.
 */
export class SpareFd implements Disposable {
  #fd: number | null = null;
  #closed = false;

  constructor() {
    this.restore();
  }

  /** Gives the slot up; false if none was held. */
  release(): boolean {
    if (this.#fd === null) return false;
    native.closeFd(this.#fd);
    this.#fd = null;
    return true;
  }

  /** Takes a slot again if none is held; false if the table is full (the slot was taken meanwhile). */
  restore(): boolean {
    if (this.#closed) return false;
    if (this.#fd !== null) return true;
    try {
      this.#fd = native.openSpareFd();
      return true;
    } catch {
      return false;
    }
  }

  /** Idempotent. */
  close(): void {
    this.#closed = true;
    this.release();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
