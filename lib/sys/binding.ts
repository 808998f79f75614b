/**
 * Loads the native addon and describes it. This file is the one place where the native
 * module's untyped surface meets TypeScript: everything past it is typed.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LoadError } from '../core/errors.js';

export interface NativeMapping {
  /** The whole mapping as one external ArrayBuffer; null once closed, or when longer than the maxBuffer it was made with. */
  readonly buffer: ArrayBuffer | null;
  /** A new external ArrayBuffer over [offset, offset + length); detached at close like the whole one. */
  window(offset: number, length: number): ArrayBuffer;
  readonly fd: number;
  readonly size: number;
  readonly closed: boolean;
  /** Detaches the buffer (views become length 0), unmaps, closes the fd. Idempotent. */
  close(): void;
}

export interface NativeEventFd {
  signal(count?: number): void;
  drain(): number;
  readonly fd: number;
  close(): void;
}

export interface NativeWatcher {
  /** events: 1 readable (default), 2 writable, 3 both. */
  start(events?: number): void;
  stop(): void;
  ref(): void;
  unref(): void;
  hasRef(): boolean;
  readonly active: boolean;
  readonly closed: boolean;
  close(): void;
}

export interface NativeSocket {
  accept(): NativeSocket | null;
  send(bytes: Uint8Array, fd?: number): boolean;
  /** Returns the fd received with the message, or NO_FD, AGAIN, EOF. */
  recv(out: Uint8Array): number;
  shutdown(): void;
  /** SO_SNDBUF. */
  setSendBuffer(bytes: number): void;
  readonly fd: number;
  /** Bytes of an unfinished message received so far. */
  readonly pending: number;
  close(): void;
}

export interface NativeInterruptTable {
  /** Adopts `fd` (an eventfd, now the table's only copy) as the next vector of `peer`; returns that vector. Closes it and throws otherwise. */
  add(peer: number, fd: number): number;
  /** Closes the eventfds of `peer` (not the own ID). */
  remove(peer: number): void;
  /** Other peers that can be rung, in the order their first vector arrived. */
  peers(): number[];
  /** Doorbell mode: every signal a 32-bit store of dest << 16 | vector at `offset` of `registers` (a native VfioDevice or Registers). */
  setDoorbell(registers: object, offset: number): void;
  /** Doorbell mode: `peer` (without eventfds) can be rung on vectors 0..n-1; 0 removes it. */
  setVectors(peer: number, n: number): void;
  close(): void;
  /** One eventfd write to (dest, vector), counted: false if there is no such eventfd. */
  readonly signal: (dest: number, vector: number) => boolean;
  /** Drains own eventfd `vector`, counted: the count (0 = spurious wakeup). */
  readonly wake: (vector: number) => number;
  /** The counters, doubles in the order of `counterNames`, in native memory. */
  readonly countersBuffer: ArrayBuffer;
  /** Vectors held per peer ID (own included), uint16 by ID 0..65535, in native memory. */
  readonly vectorsBuffer: ArrayBuffer;
}

export interface NativeRegisters {
  /** One volatile 32-bit load (bounds checked natively too). */
  read32(offset: number): number;
  write32(offset: number, value: number): void;
  readonly closed: boolean;
  /** Unmaps; later accesses (also an interrupt table's doorbell) fail. Idempotent. */
  close(): void;
}

export interface NativeLease {
  /** Thread stopped and joined, the word cleared, the page unmapped. Idempotent. */
  stop(): void;
  readonly stopped: boolean;
}

export interface NativeVfioRegion {
  readonly size: number;
  /** Offset of the region in the device fd (for pread/pwrite/mmap). */
  readonly offset: number;
  /** VFIO_REGION_INFO_FLAG_*. */
  readonly flags: number;
  readonly mappable: boolean;
}

export interface NativeVfioDevice {
  /** A volatile 32-bit load from BAR0 (pread of 4 bytes when VFIO does not let BAR0 be mapped). */
  read32(offset: number): number;
  write32(offset: number, value: number): void;
  /** PCI config space through the VFIO config region: width 1, 2 or 4, aligned. */
  configRead(offset: number, width: number): number;
  configWrite(offset: number, width: number, value: number): void;
  /** VFIO_DEVICE_SET_IRQS, MSI-X, DATA_EVENTFD | ACTION_TRIGGER: vector i signals fds[i]. The fds stay the caller's. */
  setIrqs(fds: number[]): void;
  /** MSI-X off (DATA_NONE); nothing when it was not on. */
  disableIrqs(): void;
  /** BAR2 as one external ArrayBuffer; null once closed, or when longer than maxBuffer. */
  readonly buffer: ArrayBuffer | null;
  window(offset: number, length: number): ArrayBuffer;
  readonly info: {
    readonly address: string;
    readonly group: string;
    readonly bar0: NativeVfioRegion;
    readonly bar2: NativeVfioRegion;
    readonly config: NativeVfioRegion;
    readonly msixVectors: number;
    readonly bar0Mapped: boolean;
  };
  readonly closed: boolean;
  /** The device fd (-1 once closed): for a Lease's own mapping of a BAR2 page. */
  readonly fd: number;
  /** MSI-X off, buffers detached, BARs unmapped, device, group and container fds closed. Idempotent. */
  close(): void;
}

export interface NativeBinding {
  shmOpen(name: string, oflag: number, mode: number): number;
  shmUnlink(name: string): void;
  memfdCreate(name: string): number;
  /** fstat size and F_GET_SEALS of an fd (seals -1 where the object cannot carry seals). */
  fdStat(fd: number): { size: number; seals: number };
  addSeals(fd: number, seals: number): void;
  /** ftruncate up to `size` if the object is smaller (never down); returns the size it had. */
  growFd(fd: number, size: number): number;
  closeFd(fd: number): void;
  dupFd(fd: number): number;
  /** An fd on /dev/null (O_RDONLY, O_CLOEXEC), the caller's to close. */
  openSpareFd(): number;
  /** Count of native resources not yet released in this environment (for leak tests). */
  liveResources(): number;
  readonly constants: {
    readonly O_RDWR: number;
    readonly O_CREAT: number;
    readonly O_EXCL: number;
    readonly F_SEAL_SEAL: number;
    readonly F_SEAL_SHRINK: number;
    readonly F_SEAL_GROW: number;
    readonly F_SEAL_WRITE: number;
    readonly F_SEAL_FUTURE_WRITE: number;
  };
  readonly Mapping: new (fd: number, size: number, maxBuffer: number) => NativeMapping;
  readonly EventFd: new (fd?: number) => NativeEventFd;
  readonly Watcher: new (fd: number, callback: (status: number, events: number) => void) => NativeWatcher;
  readonly InterruptTable: {
    new (self: number): NativeInterruptTable;
    /** The names of the counters, in their order in `countersBuffer`. */
    readonly counterNames: readonly string[];
  };
  /** (groupPath '/dev/vfio/N', PCI address, maxBuffer). */
  readonly VfioDevice: new (groupPath: string, address: string, maxBuffer: number) => NativeVfioDevice;
  /** (fd, page-aligned file offset of the page, offset of the u32 in it, interval ms). */
  readonly Lease: new (fd: number, pageOffset: number, wordOffset: number, intervalMs: number) => NativeLease;
  /** (path of a sysfs resource file, where the BAR starts in its first page, size). */
  readonly Registers: new (path: string, offsetInPage: number, size: number) => NativeRegisters;
  readonly Socket: {
    listen(path: string, mode: number, backlog: number): NativeSocket;
    connect(path: string): NativeSocket;
    readonly AGAIN: number;
    readonly EOF: number;
    readonly NO_FD: number;
  };
}

/** The package root: the nearest folder above this file with the addon's binding.gyp. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new LoadError('cannot find the ivshmem package root (no binding.gyp above lib/)');
    dir = parent;
  }
}

function minimumNode(root: string): string | null {
  try {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { engines?: { node?: string } };
    return pkg.engines?.node ?? null;
  } catch {
    return null;
  }
}

/** Why loading failed, each with what to do about it (after sharp's lib/sharp.mjs). */
function explain(root: string, cause: unknown): LoadError {
  const causes: string[] = [];
  const help: string[] = [];
  if (process.platform !== 'linux') {
    causes.push(`this is ${process.platform}; ivshmem needs Linux (POSIX shm, eventfd, SCM_RIGHTS)`);
  }
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  if (major < 20 || (major === 20 && minor < 19)) {
    causes.push(`Node ${process.versions.node} is older than ${minimumNode(root) ?? '>=20.19'}`);
    help.push('Upgrade Node.js to 20.19 or later.');
  }
  const built = join(root, 'build', 'Release', 'ivshmem.node');
  if (!existsSync(built)) {
    causes.push(`the addon has not been built (${built} does not exist)`);
    help.push(
      'Build it: `npm rebuild ivshmem` (in this repository: `npm install` or `npm run build:native`).',
      'Building needs a C++17 compiler (g++ or clang), make and python3: on Debian/Ubuntu `apt-get install -y build-essential python3`.',
    );
  } else {
    causes.push(`the built addon ${built} failed to load: ${(cause as Error)?.message ?? String(cause)}`);
    help.push(
      'If Node was upgraded or the package was copied from another machine, rebuild it: `npm rebuild ivshmem`.',
    );
  }
  if (process.versions.electron) {
    causes.push('Electron\'s V8 sandbox refuses external ArrayBuffers, which shared memory needs');
  }
  const message = [
    'Could not load the ivshmem native addon.',
    'Possible causes:',
    ...causes.map((c) => `- ${c}`),
    'Possible solutions:',
    ...help.map((h) => `- ${h}`),
  ].join('\n');
  return new LoadError(message, { cause });
}

function load(): NativeBinding {
  const root = packageRoot();
  const require = createRequire(import.meta.url);
  // IVSHMEM_NATIVE names another build of the addon (e.g. the sanitizer build of
  // `npm run build:cmake:asan`); otherwise node-gyp-build finds the prebuild or build/Release.
  const override = process.env.IVSHMEM_NATIVE;
  try {
    if (override !== undefined && override !== '') return require(override) as NativeBinding;
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the one untyped boundary
    return nodeGypBuild(root) as any as NativeBinding;
  } catch (cause) {
    throw explain(root, cause);
  }
}

export const native: NativeBinding = load();
