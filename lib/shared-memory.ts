/**
 * A shared-memory region mapped MAP_SHARED into this process: a named POSIX shm object, an
 * anonymous memfd, or an fd received from elsewhere (e.g. from an ivshmem server).
 *
 * Names: POSIX names start with one '/' and contain no other. A name given without the
 * leading slash gets one ('ivshmem' means '/ivshmem'); any other '/' is a RangeError.
 */
import { native, type NativeMapping } from './binding.js';
import { ClosedError } from './errors.js';
import * as check from './validate.js';

const NAME_MAX = 255;

// The native mapping behind each SharedMemory, for the doorbell (kept off the public surface).
const mappings = new WeakMap<SharedMemory, NativeMapping>();

/** @internal The native mapping, for native users of the same memory (the doorbell). */
export function nativeMappingOf(shm: SharedMemory): NativeMapping {
  const mapping = mappings.get(shm);
  if (mapping === undefined || shm.closed) throw new ClosedError('SharedMemory');
  return mapping;
}

/** '/name' from 'name' or '/name'; RangeError for empty, nested or over-long names. */
export function normalizeShmName(name: unknown): string {
  const raw = check.string('name', name);
  const full = raw.startsWith('/') ? raw : `/${raw}`;
  if (full.length === 1) throw new RangeError('name must not be empty');
  if (full.indexOf('/', 1) !== -1) throw new RangeError(`name must not contain '/' after the first character, got ${JSON.stringify(raw)}`);
  if (Buffer.byteLength(full.slice(1)) > NAME_MAX) throw new RangeError(`name must be at most ${NAME_MAX} bytes (UTF-8)`);
  if (full.includes('\0')) throw new RangeError('name must not contain NUL');
  return full;
}

export interface CreateOptions {
  /** POSIX shm name; without one, an anonymous memfd is created (share it by passing its fd). */
  name?: string;
  /** Size in bytes (> 0). */
  size: number;
  /** Fail with EEXIST if the named object exists (default true); false opens it, growing it to `size` if smaller (never shrinking it: others may have it mapped). */
  exclusive?: boolean;
  /** Permission bits of a named object (default 0o600). */
  mode?: number;
}

export interface FromFdOptions {
  /** Map a duplicate and leave `fd` to the caller (default false: ownership of `fd` is taken). */
  dup?: boolean;
}

export class SharedMemory implements Disposable {
  readonly #mapping: NativeMapping;
  readonly #name: string | null;
  readonly #size: number;
  #closed = false;

  private constructor(mapping: NativeMapping, name: string | null) {
    this.#mapping = mapping;
    this.#name = name;
    this.#size = mapping.size;
    mappings.set(this, mapping);
  }

  /** Creates a named POSIX shm object (when `name` is given) or a memfd, sized and mapped. */
  static create(options: CreateOptions): SharedMemory {
    if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
    const size = check.integer('size', options.size, 1);
    const exclusive = options.exclusive === undefined ? true : check.bool('exclusive', options.exclusive);
    const mode = options.mode === undefined ? 0o600 : check.integer('mode', options.mode, 0, 0o777);
    if (options.name === undefined) {
      return new SharedMemory(new native.Mapping(native.memfdCreate('ivshmem'), size), null);
    }
    const name = normalizeShmName(options.name);
    const { O_RDWR, O_CREAT, O_EXCL } = native.constants;
    const fd = native.shmOpen(name, O_RDWR | O_CREAT | (exclusive ? O_EXCL : 0), mode);
    try {
      return new SharedMemory(new native.Mapping(fd, size), name);
    } catch (error) {
      // Never leave behind an object this call created but could not map.
      if (exclusive) native.shmUnlink(name);
      throw error;
    }
  }

  /** Opens and maps an existing named object at its current size. */
  static open(name: string): SharedMemory {
    const full = normalizeShmName(name);
    const fd = native.shmOpen(full, native.constants.O_RDWR, 0);
    return new SharedMemory(new native.Mapping(fd, 0), full);
  }

  /** Maps an fd (shm, memfd, or one received over a socket) at its current size. */
  static fromFd(fd: number, options: FromFdOptions = {}): SharedMemory {
    check.fd('fd', fd);
    const own = options.dup === true ? native.dupFd(fd) : fd;
    return new SharedMemory(new native.Mapping(own, 0), null);
  }

  /** Removes a named object; existing mappings stay valid. */
  static unlink(name: string): void {
    native.shmUnlink(normalizeShmName(name));
  }

  /** The whole mapping. After close() it is detached: its byteLength is 0. */
  get buffer(): ArrayBuffer {
    const buffer = this.#mapping.buffer;
    if (buffer === null) throw new ClosedError('SharedMemory');
    return buffer;
  }

  /** A byte view of [offset, offset + length). */
  bytes(offset = 0, length?: number): Uint8Array {
    const buffer = this.buffer;
    check.integer('offset', offset, 0, this.#size);
    const len = length === undefined ? this.#size - offset : check.integer('length', length, 0, this.#size - offset);
    return new Uint8Array(buffer, offset, len);
  }

  get size(): number {
    return this.#size;
  }

  /** The fd backing the mapping (to send to another process); owned by this object. */
  get fd(): number {
    if (this.#closed) throw new ClosedError('SharedMemory');
    return this.#mapping.fd;
  }

  /** The POSIX name, or null for a memfd or an adopted fd. */
  get name(): string | null {
    return this.#name;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Removes this object's name (if it has one); the mapping stays valid. */
  unlink(): void {
    if (this.#name === null) throw new RangeError('this SharedMemory has no name to unlink');
    native.shmUnlink(this.#name);
  }

  /** Detaches the buffer (every view becomes length 0), unmaps, closes the fd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#mapping.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
