/** A Linux eventfd: a 64-bit counter that a writer signals and a reader drains. */
import { native, type NativeEventFd } from './binding.js';
import { ClosedError } from '../core/errors.js';
import { FdWatcher, FdWatchers } from './watcher.js';
import * as check from '../core/validate.js';

/** The largest value an eventfd counter can hold. */
const MAX_COUNT = 2 ** 53 - 1; // what a JS number carries exactly; the kernel allows 2^64 - 2

export class EventFd implements Disposable {
  readonly #native: NativeEventFd;
  #closed = false;
  // Watchers made by watch(): closed with the eventfd, before its fd number can be reused.
  readonly #watchers = new FdWatchers();

  /** Creates a new eventfd (EFD_NONBLOCK | EFD_CLOEXEC, counter 0). */
  constructor();
  /** @internal */
  constructor(adopted: NativeEventFd);
  constructor(adopted?: NativeEventFd) {
    this.#native = adopted ?? new native.EventFd();
  }

  /** Takes ownership of an existing eventfd (e.g. one received from an ivshmem server). */
  static adopt(fd: number): EventFd {
    return new EventFd(new native.EventFd(check.fd('fd', fd)));
  }

  /** Adds `count` (default 1) to the counter, waking whoever polls the fd. */
  signal(count = 1): void {
    check.integer('count', count, 1, MAX_COUNT);
    this.#live().signal(count);
  }

  /** Reads until the counter is 0; returns what was read (0 when nothing was pending). */
  drain(): number {
    return this.#live().drain();
  }

  get fd(): number {
    return this.#live().fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Calls `onSignal(count)` on the event loop each time the eventfd is signalled, draining it
   * first (so the level-triggered poll does not spin). Close the returned watcher to stop.
   */
  watch(onSignal: (count: number) => void): FdWatcher {
    if (typeof onSignal !== 'function') throw new TypeError('onSignal must be a function');
    const watcher = new FdWatcher(this.fd);
    watcher.on('readable', () => {
      if (this.#closed) return;
      const count = this.drain();
      if (count > 0) onSignal(count);
    });
    watcher.start();
    this.#watchers.track(watcher);
    return watcher;
  }

  /** Closes the fd, and the watchers made by watch(). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watchers.closeAll();
    this.#native.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #live(): NativeEventFd {
    if (this.#closed) throw new ClosedError('EventFd');
    return this.#native;
  }
}
