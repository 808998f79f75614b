/**
 * Typed errors with stable codes. Each class has a cross-realm-safe guard: `instanceof` fails
 * across realms (and for errors rebuilt from a child's JSON), the `code` does not.
 *
 * System errors thrown by the native layer are plain `Error`s shaped like Node's own:
 * `code` ('ENOENT'), `errno` (negative, as Node's), `syscall` ('shm_open'), and the path or fd in the
 * message. `isSystemError()` recognises them.
 */

export const ErrorCodes = {
  /** A resource was used after `close()`. */
  CLOSED: 'ERR_IVSHMEM_CLOSED',
  /** The native addon could not be loaded. */
  LOAD: 'ERR_IVSHMEM_LOAD',
  /** A peer or server broke the ivshmem-server wire protocol. */
  PROTOCOL: 'ERR_IVSHMEM_PROTOCOL',
  /** The shared-memory header (bitmask mode) is missing, foreign or of another version. */
  HEADER: 'ERR_IVSHMEM_HEADER',
  /** The server refused or dropped this client (full, shutting down). */
  REFUSED: 'ERR_IVSHMEM_REFUSED',
  /** Already taken: a socket path held by a live server, a peer's pending bit served by another receive loop. */
  IN_USE: 'ERR_IVSHMEM_IN_USE',
  /** An operation did not complete in time. */
  TIMEOUT: 'ERR_IVSHMEM_TIMEOUT',
  /** A message ring's header or indices are impossible. */
  CORRUPT: 'ERR_IVSHMEM_CORRUPT',
  /** The peer at the other end of a channel left the network. */
  PEER_LEFT: 'ERR_IVSHMEM_PEER_LEFT',
  /** Shared memory larger than the caller allows (`maxSize`). */
  TOO_LARGE: 'ERR_IVSHMEM_TOO_LARGE',
  /** A PCI device cannot be opened through VFIO (no such device, no IOMMU group, group not viable). */
  DEVICE: 'ERR_IVSHMEM_DEVICE',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** Base class: every error of this package's own has a stable `code`. */
export class IvshmemError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

export class ClosedError extends IvshmemError {
  declare readonly code: typeof ErrorCodes.CLOSED;
  constructor(what: string) {
    super(ErrorCodes.CLOSED, `${what} is closed`);
  }
}

export class LoadError extends IvshmemError {
  declare readonly code: typeof ErrorCodes.LOAD;
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.LOAD, message, options);
  }
}

/** Why a protocol stream was rejected; stable, for programs to branch on. */
export type ProtocolErrorReason =
  | 'bad-length'
  | 'bad-version'
  | 'unexpected-fd'
  | 'bad-id'
  | 'missing-shm'
  | 'duplicate-shm'
  | 'out-of-range'
  | 'unknown-peer'
  | 'self-leave'
  | 'too-many-vectors'
  | 'truncated'
  | 'incomplete'
  | 'after-error';

export class ProtocolError extends IvshmemError {
  declare readonly code: typeof ErrorCodes.PROTOCOL;
  readonly reason: ProtocolErrorReason;
  constructor(reason: ProtocolErrorReason, message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.PROTOCOL, message, options);
    this.reason = reason;
  }
}

export class HeaderError extends IvshmemError {
  declare readonly code: typeof ErrorCodes.HEADER;
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.HEADER, message, options);
  }
}

export class RefusedError extends IvshmemError {
  declare readonly code: typeof ErrorCodes.REFUSED;
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.REFUSED, message, options);
  }
}

export class InUseError extends IvshmemError {
  declare readonly code: typeof ErrorCodes.IN_USE;
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.IN_USE, message, options);
  }
}

export class TimeoutError extends IvshmemError {
  declare readonly code: typeof ErrorCodes.TIMEOUT;
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.TIMEOUT, message, options);
  }
}

export class CorruptError extends IvshmemError {
  declare readonly code: typeof ErrorCodes.CORRUPT;
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.CORRUPT, message, options);
  }
}

export class PeerLeftError extends IvshmemError {
  declare readonly code: typeof ErrorCodes.PEER_LEFT;
  readonly peer: number;
  constructor(peer: number, message: string) {
    super(ErrorCodes.PEER_LEFT, message);
    this.peer = peer;
  }
}

export class TooLargeError extends IvshmemError {
  declare readonly code: typeof ErrorCodes.TOO_LARGE;
  /** The object's size in bytes. */
  readonly size: number;
  /** The largest size allowed. */
  readonly limit: number;
  constructor(size: number, limit: number, message: string) {
    super(ErrorCodes.TOO_LARGE, message);
    this.size = size;
    this.limit = limit;
  }
}

/** Why a PCI device could not be found or opened; stable, for programs to branch on. */
export type DeviceErrorReason =
  /** Not a PCI address (DDDD:BB:DD.F), or no such device in /sys/bus/pci/devices. */
  | 'bad-address'
  /** No ivshmem device (1af4:1110) in the system, or several and none chosen. */
  | 'no-device'
  /** The address is a PCI device, but not an ivshmem one. */
  | 'not-ivshmem'
  /** The device has no IOMMU group (no IOMMU, or it is off: intel_iommu=on). */
  | 'no-iommu-group'
  /** VFIO is not there: the vfio-pci module is not loaded (or /dev/vfio/vfio is missing). */
  | 'no-vfio'
  /** Another device of the group is bound to a driver other than vfio-pci. */
  | 'not-viable'
  /** The device is not bound to vfio-pci, and binding was not asked for. */
  | 'not-bound'
  /** A driver other than the one needed holds the device (it is left alone). */
  | 'bound-elsewhere'
  /** Binding to vfio-pci was asked for and did not take. */
  | 'bind-failed'
  /** Another process has the device's VFIO group open. */
  | 'busy'
  /** This process may not open or bind the device (root, or the group's /dev/vfio node, is needed). */
  | 'permission';

export class DeviceError extends IvshmemError {
  declare readonly code: typeof ErrorCodes.DEVICE;
  readonly reason: DeviceErrorReason;
  /** The PCI address asked for, as given. */
  readonly address: string;
  constructor(reason: DeviceErrorReason, address: string, message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.DEVICE, message, options);
    this.reason = reason;
    this.address = address;
  }
}

/**
 * Every error of this package's own, as a union whose `code` tells them apart:
 * `switch (error.code)` narrows to the class (`case ErrorCodes.TOO_LARGE: error.limit`).
 */
export type IvshmemErrorType =
  | ClosedError
  | LoadError
  | ProtocolError
  | HeaderError
  | RefusedError
  | InUseError
  | TimeoutError
  | CorruptError
  | PeerLeftError
  | TooLargeError
  | DeviceError;

/** Shape of the system errors the native layer throws (the same as Node's own). */
export interface SystemError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
  fd?: number;
}

function hasCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}

export function isIvshmemError(error: unknown): error is IvshmemErrorType {
  const code = (error as { code?: unknown } | null)?.code;
  return (
    error instanceof Error &&
    typeof code === 'string' &&
    (Object.values(ErrorCodes) as string[]).includes(code)
  );
}
export const isClosedError = (e: unknown): e is ClosedError => hasCode(e, ErrorCodes.CLOSED);
export const isLoadError = (e: unknown): e is LoadError => hasCode(e, ErrorCodes.LOAD);
export const isProtocolError = (e: unknown): e is ProtocolError => hasCode(e, ErrorCodes.PROTOCOL);
export const isHeaderError = (e: unknown): e is HeaderError => hasCode(e, ErrorCodes.HEADER);
export const isRefusedError = (e: unknown): e is RefusedError => hasCode(e, ErrorCodes.REFUSED);
export const isInUseError = (e: unknown): e is InUseError => hasCode(e, ErrorCodes.IN_USE);
export const isTimeoutError = (e: unknown): e is TimeoutError => hasCode(e, ErrorCodes.TIMEOUT);
export const isCorruptError = (e: unknown): e is CorruptError => hasCode(e, ErrorCodes.CORRUPT);
export const isPeerLeftError = (e: unknown): e is PeerLeftError => hasCode(e, ErrorCodes.PEER_LEFT);
export const isTooLargeError = (e: unknown): e is TooLargeError => hasCode(e, ErrorCodes.TOO_LARGE);
export const isDeviceError = (e: unknown): e is DeviceError => hasCode(e, ErrorCodes.DEVICE);

export function isSystemError(error: unknown): error is SystemError {
  if (!(error instanceof Error)) return false;
  const e = error as Partial<SystemError>;
  return typeof e.code === 'string' && typeof e.errno === 'number' && typeof e.syscall === 'string';
}
