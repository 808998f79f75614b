/**
 * Readiness of an fd on this thread's event loop (libuv uv_poll_t, level-triggered): emits
 * 'readable' while data waits, so the listener must consume it (drain an eventfd, recv a
 * socket) or the loop spins.
 */
import { EventEmitter } from 'node:events';
import { native, type NativeWatcher } from './binding.js';
import { constants } from 'node:os';
import { ClosedError, type SystemError } from '../core/errors.js';
import * as check from '../core/validate.js';

const READABLE = 1;

/** A poll failure shaped like Node's system errors (libuv statuses are negative errnos). */
function pollError(status: number, fd: number): SystemError {
  const code = Object.entries(constants.errno).find(([, n]) => n === -status)?.[0] ?? 'EIO';
  const error = new Error(`${code}: polling fd ${fd} failed, uv_poll`) as SystemError;
  error.code = code;
  error.errno = status;
  error.syscall = 'uv_poll';
  error.fd = fd;
  return error;
}
const WRITABLE = 2;

export interface FdWatcherEvents {
  readable: [];
  /** Only when started with `{ writable: true }`. */
  writable: [];
  error: [error: Error];
  close: [];
}

export class FdWatcher extends EventEmitter<FdWatcherEvents> implements Disposable {
  readonly #native: NativeWatcher;
  readonly #fd: number;
  #closed = false;
  #events = READABLE;

  /** Watches `fd` (not owned: close the watcher before the fd). Call start() to begin. */
  constructor(fd: number) {
    super();
    this.#fd = check.fd('fd', fd);
    this.#native = new native.Watcher(fd, (status, events) => this.#onPoll(status, events));
  }

  get fd(): number {
    return this.#fd;
  }

  /**
   * Begins emitting 'readable' (and 'writable' when asked; a socket is writable almost always,
   * so ask only while output is queued). Calling it again changes the events watched.
   */
  start(events: { readable?: boolean; writable?: boolean } = {}): this {
    const mask = (events.readable === false ? 0 : READABLE) | (events.writable === true ? WRITABLE : 0);
    this.#events = mask;
    this.#live().start(mask);
    return this;
  }

  /** Stops emitting without closing; start() resumes. */
  stop(): this {
    this.#live().stop();
    return this;
  }

  /** An active watcher keeps the process alive (the default). */
  ref(): this {
    this.#live().ref();
    return this;
  }

  /** Lets the process exit even while this watcher is active. */
  unref(): this {
    this.#live().unref();
    return this;
  }

  hasRef(): boolean {
    return !this.#closed && this.#native.hasRef();
  }

  get active(): boolean {
    return !this.#closed && this.#native.active;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops and releases the libuv handle. Idempotent; safe from inside a 'readable' listener. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close();
    this.emit('close');
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Yields once per readiness; the consumer must drain before the next step. Ends on close(). */
  async *[Symbol.asyncIterator](): AsyncGenerator<void, void, undefined> {
    let wake: (() => void) | null = null;
    let ready = false;
    const onReadable = (): void => {
      ready = true;
      // Level-triggered: stop until the consumer has had its turn, or the loop would spin.
      if (!this.#closed) this.#native.stop();
      wake?.();
    };
    const onClose = (): void => wake?.();
    this.on('readable', onReadable);
    this.on('close', onClose);
    try {
      this.start();
      while (!this.#closed) {
        if (!ready) {
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          wake = null;
          if (!ready) break;
        }
        ready = false;
        yield;
        if (!this.#closed) this.#native.start(this.#events);
      }
    } finally {
      this.off('readable', onReadable);
      this.off('close', onClose);
    }
  }

  #onPoll(status: number, events: number): void {
    if (this.#closed) return;
    if (status < 0) {
      this.emit('error', pollError(status, this.#fd));
      return;
    }
    if (events & READABLE) this.emit('readable');
    if (events & WRITABLE && !this.#closed) this.emit('writable');
  }

  #live(): NativeWatcher {
    if (this.#closed) throw new ClosedError('FdWatcher');
    return this.#native;
  }
}

/** The watchers an fd's owner made for it: closed with the fd, before it, so none polls a reused number. */
export class FdWatchers {
  readonly #watchers = new Set<FdWatcher>();

  /** Remembers `watcher` until it closes; returns it. */
  track(watcher: FdWatcher): FdWatcher {
    this.#watchers.add(watcher);
    watcher.once('close', () => this.#watchers.delete(watcher));
    return watcher;
  }

  closeAll(): void {
    for (const watcher of [...this.#watchers]) watcher.close();
  }
}
