/**
 * A shared-memory region mapped MAP_SHARED into this process: a named POSIX shm object, an
 * anonymous memfd, or an fd received from elsewhere (e.g. from an ivshmem server).
 *
 * Names: POSIX names start with one '/' and contain no other. A name given without the
 * leading slash gets one ('ivshmem' means '/ivshmem'); any other '/' is a RangeError.
 *
 * Size: the whole region is always mapped. One ArrayBuffer can be at most
 * `SharedMemory.MAX_BUFFER_LENGTH` bytes (buffer.constants.MAX_LENGTH: 4 GiB on Node 20); a
 * larger region is reached through `view(offset, length)` windows.
 */
import { constants as bufferConstants } from 'node:buffer';
import { native, type NativeMapping } from './binding.js';
import { ClosedError, TooLargeError } from '../core/errors.js';
import * as check from '../core/validate.js';

const NAME_MAX = 255;
const MAX_BUFFER_LENGTH = bufferConstants.MAX_LENGTH;

/** The seals of a memfd (`fcntl(F_GET_SEALS)`), each true when set. */
export interface Seals {
  /** No shrinking: nobody can truncate the memory under the others' mappings (SIGBUS). */
  readonly shrink: boolean;
  readonly grow: boolean;
  readonly write: boolean;
  /** No new writable mappings: every later peer's mmap would fail with EPERM. */
  readonly futureWrite: boolean;
  /** The seals themselves are fixed: nobody can add another. */
  readonly seal: boolean;
}

function decodeSeals(bits: number): Seals | null {
  if (bits < 0) return null;
  const c = native.constants;
  return Object.freeze({
    shrink: (bits & c.F_SEAL_SHRINK) !== 0,
    grow: (bits & c.F_SEAL_GROW) !== 0,
    write: (bits & c.F_SEAL_WRITE) !== 0,
    futureWrite: (bits & c.F_SEAL_FUTURE_WRITE) !== 0,
    seal: (bits & c.F_SEAL_SEAL) !== 0,
  });
}

/**
 * Memory an endpoint works in: a SharedMemory, or (inside a VM) the ivshmem device's BAR2. The
 * layouts above (header, channels, device state) need no more than this.
 */
export interface MemoryView {
  /** Bytes. */
  readonly size: number;
  /** The whole memory as one ArrayBuffer (a RangeError if it is larger than one can be). */
  readonly buffer: ArrayBuffer;
  /** An ArrayBuffer over [offset, offset + length) of the same memory. */
  view(offset?: number, length?: number): ArrayBuffer;
  /** A Uint8Array over [offset, offset + length). */
  bytes(offset?: number, length?: number): Uint8Array;
  readonly closed: boolean;
}

/** What a native mapping shows JS: the whole buffer (null when too long or closed) and windows. */
interface NativeBuffers {
  readonly buffer: ArrayBuffer | null;
  window(offset: number, length: number): ArrayBuffer;
}

/**
 * @internal `buffer`, `view()` and `bytes()` of a native mapping (a SharedMemory's, a VFIO
 * BAR's), against the runtime's longest ArrayBuffer; `owner` names the closed resource.
 */
export class MappedView implements MemoryView {
  readonly size: number;
  readonly #native: NativeBuffers;
  readonly #what: string;
  readonly #owner: string;
  readonly #isClosed: () => boolean;

  constructor(size: number, native: NativeBuffers, what: string, owner: string, isClosed: () => boolean) {
    this.size = size;
    this.#native = native;
    this.#what = what;
    this.#owner = owner;
    this.#isClosed = isClosed;
  }

  get closed(): boolean {
    return this.#isClosed();
  }

  get buffer(): ArrayBuffer {
    this.#live();
    const buffer = this.#native.buffer;
    if (buffer === null) {
      throw new RangeError(
        `${this.#what} is ${this.size} bytes, more than the ${MAX_BUFFER_LENGTH} bytes one ArrayBuffer can hold in this runtime (buffer.constants.MAX_LENGTH); reach it through view(offset, length)`,
      );
    }
    return buffer;
  }

  view(offset = 0, length?: number): ArrayBuffer {
    this.#live();
    const len = this.#length(offset, length);
    if (len > MAX_BUFFER_LENGTH) {
      throw new RangeError(
        `a view of ${len} bytes is longer than the ${MAX_BUFFER_LENGTH} bytes one ArrayBuffer can hold in this runtime (buffer.constants.MAX_LENGTH); take smaller views`,
      );
    }
    return this.#native.window(offset, len);
  }

  bytes(offset = 0, length?: number): Uint8Array {
    this.#live();
    const len = this.#length(offset, length);
    if (this.size <= MAX_BUFFER_LENGTH) return new Uint8Array(this.buffer, offset, len);
    return new Uint8Array(this.view(offset, len));
  }

  #length(offset: number, length: number | undefined): number {
    check.integer('offset', offset, 0, this.size);
    return length === undefined ? this.size - offset : check.integer('length', length, 0, this.size - offset);
  }

  #live(): void {
    if (this.#isClosed()) throw new ClosedError(this.#owner);
  }
}

// A buffer over the first min(size, MAX_BUFFER_LENGTH) bytes, for the layouts that live at the
// start of the memory (header, channels, device state), whatever the region's size.
const lowBuffers = new WeakMap<MemoryView, ArrayBuffer>();

/** @internal An ArrayBuffer over [0, min(size, MAX_BUFFER_LENGTH)): the whole buffer when it fits. */
export function lowBuffer(shm: MemoryView): ArrayBuffer {
  if (shm.size <= MAX_BUFFER_LENGTH) return shm.buffer;
  let low = lowBuffers.get(shm);
  if (low === undefined || low.byteLength === 0) {
    low = shm.view(0, MAX_BUFFER_LENGTH);
    lowBuffers.set(shm, low);
  }
  return low;
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
  /**
   * Refuse objects larger than this many bytes with a TooLargeError, before mapping them
   * (default: no limit). For memory handed over by someone you do not trust. Without `dup`
   * the fd is closed on this failure as on any other.
   */
  maxSize?: number;
}

export class SharedMemory implements MemoryView, Disposable {
  /**
   * The longest ArrayBuffer this runtime makes (buffer.constants.MAX_LENGTH: 2^32 on Node 20,
   * 2^53 − 1 on Node ≥ 22). A region larger than this has no `buffer`; use `view()`.
   */
  static readonly MAX_BUFFER_LENGTH: number = MAX_BUFFER_LENGTH;

  readonly #mapping: NativeMapping;
  readonly #name: string | null;
  readonly #size: number;
  readonly #view: MappedView;
  #closed = false;

  private constructor(mapping: NativeMapping, name: string | null) {
    this.#mapping = mapping;
    this.#name = name;
    this.#size = mapping.size;
    this.#view = new MappedView(mapping.size, mapping, 'this shared memory', 'SharedMemory', () => this.#closed);
  }

  /** Creates a named POSIX shm object (when `name` is given) or a memfd, sized and mapped. */
  static create(options: CreateOptions): SharedMemory {
    if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
    const size = check.integer('size', options.size, 1);
    const exclusive = options.exclusive === undefined ? true : check.bool('exclusive', options.exclusive);
    const mode = options.mode === undefined ? 0o600 : check.integer('mode', options.mode, 0, 0o777);
    if (options.name === undefined) {
      return new SharedMemory(new native.Mapping(native.memfdCreate('ivshmem'), size, MAX_BUFFER_LENGTH), null);
    }
    const name = normalizeShmName(options.name);
    const { O_RDWR, O_CREAT, O_EXCL } = native.constants;
    const fd = native.shmOpen(name, O_RDWR | O_CREAT | (exclusive ? O_EXCL : 0), mode);
    try {
      return new SharedMemory(new native.Mapping(fd, size, MAX_BUFFER_LENGTH), name);
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
    return new SharedMemory(new native.Mapping(fd, 0, MAX_BUFFER_LENGTH), full);
  }

  /** Maps an fd (shm, memfd, or one received over a socket) at its current size. */
  static fromFd(fd: number, options: FromFdOptions = {}): SharedMemory {
    check.fd('fd', fd);
    const maxSize = options.maxSize === undefined ? undefined : check.integer('maxSize', options.maxSize, 1);
    if (maxSize !== undefined) {
      const { size } = native.fdStat(fd);
      if (size > maxSize) {
        if (options.dup !== true) native.closeFd(fd); // ours from the call on, as on any failure
        throw new TooLargeError(size, maxSize, `shared memory of ${size} bytes is larger than the ${maxSize} bytes allowed (maxSize)`);
      }
    }
    const own = options.dup === true ? native.dupFd(fd) : fd;
    return new SharedMemory(new native.Mapping(own, 0, MAX_BUFFER_LENGTH), null);
  }

  /** Removes a named object; existing mappings stay valid. */
  static unlink(name: string): void {
    native.shmUnlink(normalizeShmName(name));
  }

  /**
   * The whole mapping as one ArrayBuffer. After close() it is detached: its byteLength is 0.
   * A RangeError for a region larger than `MAX_BUFFER_LENGTH`: use `view()` then.
   */
  get buffer(): ArrayBuffer {
    return this.#view.buffer;
  }

  /**
   * A new ArrayBuffer over [offset, offset + length) of the mapping (default: to the end), the
   * same memory as `buffer`, detached at close() like it. `length` can be at most
   * `MAX_BUFFER_LENGTH`.
   */
  view(offset = 0, length?: number): ArrayBuffer {
    return this.#view.view(offset, length);
  }

  /** A byte view of [offset, offset + length) (default: to the end; at most `MAX_BUFFER_LENGTH` bytes). */
  bytes(offset = 0, length?: number): Uint8Array {
    return this.#view.bytes(offset, length);
  }

  /**
   * Seals a memfd against shrinking, growing and further seals (`F_SEAL_SHRINK | F_SEAL_GROW |
   * F_SEAL_SEAL`): whoever else holds the fd can then neither truncate it under the others'
   * mappings nor add `F_SEAL_FUTURE_WRITE` to stop later peers from mapping it. Only memfds
   * can be sealed: a named POSIX object is a RangeError.
   */
  seal(): void {
    if (this.#closed) throw new ClosedError('SharedMemory');
    if (this.#name !== null) throw new RangeError(`${this.#name} is a named POSIX shm object, which cannot be sealed; only a memfd can`);
    const c = native.constants;
    native.addSeals(this.#mapping.fd, c.F_SEAL_SHRINK | c.F_SEAL_GROW | c.F_SEAL_SEAL);
  }

  /**
   * The seals on the memory now; null if the object cannot carry any (e.g. a plain file). A
   * named POSIX object reports only `seal`: the kernel fixes its seals at none.
   */
  get seals(): Seals | null {
    if (this.#closed) throw new ClosedError('SharedMemory');
    return decodeSeals(native.fdStat(this.#mapping.fd).seals);
  }

  /**
   * The object's size now (fstat), which differs from `size` only if someone resized it
   * since it was mapped: smaller means touching the memory past it would raise SIGBUS.
   */
  currentSize(): number {
    if (this.#closed) throw new ClosedError('SharedMemory');
    return native.fdStat(this.#mapping.fd).size;
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
