/**
 * AF_UNIX stream sockets with QEMU's ivshmem framing: each message is exactly 8 bytes and
 * carries at most one fd. Non-blocking: send() returns false and recv() returns 'again' when
 * the caller should wait (see `watch()`). Node's own net module cannot pass fds, hence this.
 */
import { native, type NativeSocket } from './binding.js';
import { ClosedError } from '../core/errors.js';
import { FdWatcher, FdWatchers } from './watcher.js';
import * as check from '../core/validate.js';

// QEMU's framing (protocol/wire.ts exports MESSAGE_SIZE); the native socket enforces it too.
const MESSAGE_SIZE = 8;

export type Received =
  /** A whole message; `fd` (owned by the caller from now on) is the one that came with it. */
  | { readonly kind: 'message'; readonly data: Uint8Array; readonly fd: number | null }
  /** Nothing complete yet: wait for readability. */
  | { readonly kind: 'again' }
  /** The other side closed; `partial` bytes of an unfinished message were left. */
  | { readonly kind: 'eof'; readonly partial: number };

const AGAIN: Received = Object.freeze({ kind: 'again' });

export interface ListenOptions {
  /** Permission bits of the socket file (default 0o600: only this user may connect). */
  mode?: number;
  /** Pending-connection queue length (default 10, as QEMU's ivshmem-server). */
  backlog?: number;
}

export class UnixSocket implements Disposable {
  readonly #native: NativeSocket;
  readonly #path: string | null;
  #closed = false;
  // Watchers made by watch(): closed with the socket, before its fd number can be reused (a
  // libuv poll left on a closed fd watches whatever gets that number next, or aborts on re-arm).
  readonly #watchers = new FdWatchers();

  private constructor(socket: NativeSocket, path: string | null) {
    this.#native = socket;
    this.#path = path;
  }

  /** Binds and listens on `path`. EADDRINUSE if the path exists (the caller decides if stale). */
  static listen(path: string, options: ListenOptions = {}): UnixSocket {
    check.string('path', path);
    if (path.length === 0) throw new RangeError('path must not be empty');
    const mode = options.mode === undefined ? 0o600 : check.integer('mode', options.mode, 0, 0o777);
    const backlog = options.backlog === undefined ? 10 : check.integer('backlog', options.backlog, 1, 65535);
    return new UnixSocket(native.Socket.listen(path, mode, backlog), path);
  }

  /** Connects to a listening socket. ECONNREFUSED/ENOENT when nothing listens, EAGAIN when its queue is full. */
  static connect(path: string): UnixSocket {
    check.string('path', path);
    if (path.length === 0) throw new RangeError('path must not be empty');
    return new UnixSocket(native.Socket.connect(path), null);
  }

  /** The next pending connection, or null when none is waiting. */
  accept(): UnixSocket | null {
    const socket = this.#live().accept();
    return socket === null ? null : new UnixSocket(socket, null);
  }

  /**
   * Sends one 8-byte message, with `fd` attached if given (the fd stays the caller's: the
   * receiver gets its own copy). Returns false if the socket buffer is full (nothing was sent).
   */
  send(data: Uint8Array, fd?: number): boolean {
    check.bytes('data', data);
    if (data.byteLength !== MESSAGE_SIZE) {
      throw new RangeError(`data must be exactly ${MESSAGE_SIZE} bytes, got ${data.byteLength}`);
    }
    if (fd !== undefined) check.fd('fd', fd);
    return this.#live().send(data, fd);
  }

  /** Receives one whole message (see `Received`). */
  recv(): Received {
    const data = new Uint8Array(MESSAGE_SIZE);
    const socket = this.#live();
    const result = socket.recv(data);
    if (result === native.Socket.AGAIN) return AGAIN;
    if (result === native.Socket.EOF) return { kind: 'eof', partial: socket.pending };
    return { kind: 'message', data, fd: result === native.Socket.NO_FD ? null : result };
  }

  /**
   * Sets SO_SNDBUF: how much of what this side sends the kernel holds for the other side before
   * send() returns false. Linux doubles `bytes` (for its own bookkeeping) and has a floor of
   * about 4.5 KiB; each 8-byte message takes some 768 bytes of it.
   */
  setSendBuffer(bytes: number): void {
    this.#live().setSendBuffer(check.integer('bytes', bytes, 1, 2 ** 31 - 1));
  }

  /** A watcher that emits 'readable' when recv() or accept() has something. Closed with the socket. */
  watch(): FdWatcher {
    const watcher = new FdWatcher(this.fd);
    this.#watchers.track(watcher);
    return watcher;
  }

  /** Stops both directions; the other side sees EOF. */
  shutdown(): void {
    this.#live().shutdown();
  }

  get fd(): number {
    return this.#live().fd;
  }

  /** The path this socket listens on (null for connected sockets). */
  get path(): string | null {
    return this.#path;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Closes the socket (and any fd of an unfinished message), and the watchers made by watch().
   * Idempotent. Does not unlink the path.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watchers.closeAll();
    this.#native.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #live(): NativeSocket {
    if (this.#closed) throw new ClosedError('UnixSocket');
    return this.#native;
  }
}
