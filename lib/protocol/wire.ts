/**
 * The ivshmem-server wire protocol (docs/protocol.md): every message is an 8-byte
 * little-endian int64, optionally sent together with one file descriptor.
 *
 * Pure code, no I/O. The socket layers read exactly 8 bytes per message, decode them with
 * `decodeMessage()` and feed the value plus the fd that came with it to a `ClientDecoder`; the
 * server sends what the builders return. Fds are a type parameter so the server can pass its fd
 * objects and the client raw numbers; this module never opens, closes or inspects them.
 */

import { ProtocolError } from '../core/errors.js';

/** The first message a client gets; QEMU refuses anything else. */
export const PROTOCOL_VERSION = 0;
/** Message value that carries the shared-memory fd. */
export const SHM_MESSAGE = -1;
/** Peer IDs are 16-bit because the doorbell register carries them in 16 bits. */
export const MAX_PEER_ID = 65535;
/** `IVSHMEM_SERVER_MAX_VECTORS` of the contrib server and client. */
export const DEFAULT_MAX_VECTORS = 64;
/** Upper bound for `ClientDecoderOptions.maxVectors`: a sanity limit, not a QEMU one. */
export const MAX_VECTORS_LIMIT = 1024;
/** Bytes per message on the wire. */
export const MESSAGE_SIZE = 8;

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
// bigint copies of the bounds: range checks must happen before any conversion to number,
// so huge values are reported exactly instead of being rounded.
const MIN_VALUE = BigInt(SHM_MESSAGE);
const MAX_VALUE = BigInt(MAX_PEER_ID);

/** Encodes one message value as 8 bytes, little-endian int64. */
export function encodeMessage(value: bigint | number): Uint8Array {
  let v: bigint;
  if (typeof value === 'bigint') {
    v = value;
  } else if (typeof value === 'number') {
    if (!Number.isInteger(value)) {
      throw new TypeError(`message value must be an integer, got ${value}`);
    }
    v = BigInt(value); // exact: every integer-valued double is representable as a bigint
  } else {
    throw new TypeError(`message value must be a bigint or a number, got ${describeType(value)}`);
  }
  if (v < INT64_MIN || v > INT64_MAX) {
    throw new RangeError(`message value ${v} is outside the int64 range`);
  }
  const bytes = new Uint8Array(MESSAGE_SIZE);
  new DataView(bytes.buffer).setBigInt64(0, v, true);
  return bytes;
}

/** Decodes exactly one 8-byte message (a Buffer works too; its byteOffset is honoured). */
export function decodeMessage(bytes: Uint8Array): bigint {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`message must be a Uint8Array, got ${describeType(bytes)}`);
  }
  if (bytes.length !== MESSAGE_SIZE) {
    throw new RangeError(`message must be exactly ${MESSAGE_SIZE} bytes, got ${bytes.length}`);
  }
  return new DataView(bytes.buffer, bytes.byteOffset, MESSAGE_SIZE).getBigInt64(0, true);
}

/** One message as the server sends it: `value` is -1..65535, `fd` is attached when present. */
export interface WireMessage<F> {
  readonly value: number;
  readonly fd?: F;
}

/** Messages 1–3 of the connect sequence (docs/protocol.md): version, the client's ID, -1 + shm fd. */
export function greeting<F>(id: number, shm: F): WireMessage<F>[] {
  checkPeerId(id, 'client ID');
  checkFd(shm, 'shm fd');
  return [{ value: PROTOCOL_VERSION }, { value: id }, { value: SHM_MESSAGE, fd: shm }];
}

/**
 * Announces peer `id`'s eventfds, one message per vector in vector order (the receiver infers
 * the vector index from arrival order). Used both for other peers and for a client's own fds.
 */
export function peerVectors<F>(id: number, fds: readonly F[]): WireMessage<F>[] {
  checkPeerId(id, 'peer ID');
  if (!Array.isArray(fds) || fds.length === 0) {
    throw new RangeError(`peer ${id} needs at least one vector fd`);
  }
  return fds.map((fd, vector) => {
    checkFd(fd, `peer ${id} vector ${vector} fd`);
    return { value: id, fd };
  });
}

/** Tells a client that peer `id` disconnected: the ID without an fd. */
export function leave(id: number): WireMessage<never> {
  checkPeerId(id, 'peer ID');
  return { value: id };
}

/** What a `ClientDecoder` reports. Every fd pushed in comes back in exactly one event. */
export type ClientEvent<F> =
  /** The handshake is complete: own ID and the shared-memory fd. */
  | { type: 'hello'; id: number; shm: F }
  /** An eventfd: for another peer a doorbell to ring, for `own` one to receive on. */
  | { type: 'vector'; peer: number; vector: number; fd: F; own: boolean }
  /** `peer` disconnected; the receiver should close the `vectors` fds it holds for it. */
  | { type: 'peer-left'; peer: number; vectors: number };

export interface ClientDecoderOptions {
  /** Most vector fds accepted per peer (own ID included); 1..1024, default 64. */
  maxVectors?: number;
}

type Phase = 'version' | 'id' | 'shm' | 'running' | 'ended' | 'failed';

/**
 * Client-side state machine for the server's message stream. Strict where QEMU is lenient
 * (QEMU tolerates messages before the shm and drops surplus vector fds): a server that does
 * either is not one of ours or is broken, and failing loudly beats drifting out of sync.
 */
export class ClientDecoder<F> {
  readonly #maxVectors: number;
  #phase: Phase = 'version';
  #error: ProtocolError | null = null;
  #helloDone = false;
  #id: number | null = null;
  #ownVectors = 0;
  // Vector counts of other peers. A Map keeps insertion order, which peers() reports; a leave
  // deletes the entry, so a peer that comes back is listed after the ones still present.
  readonly #peers = new Map<number, number>();

  constructor(options: ClientDecoderOptions = {}) {
    const maxVectors = options.maxVectors ?? DEFAULT_MAX_VECTORS;
    if (!Number.isInteger(maxVectors) || maxVectors < 1 || maxVectors > MAX_VECTORS_LIMIT) {
      throw new RangeError(
        `maxVectors must be an integer 1..${MAX_VECTORS_LIMIT}, got ${String(maxVectors)}`,
      );
    }
    this.#maxVectors = maxVectors;
  }

  /** Own ID once the second message has arrived. */
  get id(): number | null {
    return this.#id;
  }

  /** Own (receive-side) eventfds handed out so far. */
  get ownVectors(): number {
    return this.#ownVectors;
  }

  /** True once the 'hello' event has been produced. */
  get helloDone(): boolean {
    return this.#helloDone;
  }

  /** True once push() or end() has thrown a ProtocolError; the stream is then unusable. */
  get failed(): boolean {
    return this.#phase === 'failed';
  }

  /** Vectors currently known for `peer` (for the own ID: `ownVectors`); 0 if unknown. */
  vectorsOf(peer: number): number {
    if (peer === this.#id) return this.#ownVectors;
    return this.#peers.get(peer) ?? 0;
  }

  /** Other peers currently known, in first-seen order (a peer that left and came back counts
   *  from its return). */
  peers(): number[] {
    return [...this.#peers.keys()];
  }

  /**
   * Feeds one received message: `value` from decodeMessage(), `fd` the fd that came with it or
   * null. Returns the event it produced, or null for the version and ID messages.
   *
   * Throws ProtocolError when the message is invalid. The fd passed in is then not consumed
   * (the caller must close it) and the decoder is failed: later calls throw 'after-error'.
   */
  push(value: bigint, fd: F | null): ClientEvent<F> | null {
    // A wrong type is the caller's bug, not the server's: it does not fail the stream.
    if (typeof value !== 'bigint') {
      throw new TypeError(`message value must be a bigint, got ${describeType(value)}`);
    }
    if (this.#phase === 'failed') throw this.#afterError();
    if (this.#phase === 'ended') throw new Error('ClientDecoder.push() called after end()');
    const hasFd = fd !== null && fd !== undefined;

    // The version comes first and is compared as a whole, so any other value is 'bad-version'.
    if (this.#phase === 'version') {
      if (value !== BigInt(PROTOCOL_VERSION)) {
        throw this.#fail(
          'bad-version',
          `server sent protocol version ${value}, expecting ${PROTOCOL_VERSION}`,
        );
      }
      if (hasFd) throw this.#fail('unexpected-fd', 'server sent an fd with the protocol version');
      this.#phase = 'id';
      return null;
    }

    if (value < MIN_VALUE || value > MAX_VALUE) {
      throw this.#fail(
        'out-of-range',
        `server sent invalid message ${value} (valid: ${SHM_MESSAGE}..${MAX_PEER_ID})`,
      );
    }
    const n = Number(value); // safe now: -1..65535

    switch (this.#phase) {
      case 'id':
        if (n === SHM_MESSAGE) {
          // Also what a pre-QEMU-2.5 server with own ID 0 looks like: its first message was the ID.
          throw this.#fail('bad-id', `server sent ${n} where the own ID belongs`);
        }
        if (hasFd) throw this.#fail('unexpected-fd', `server sent an fd with own ID ${n}`);
        this.#id = n;
        this.#phase = 'shm';
        return null;

      case 'shm':
        if (n !== SHM_MESSAGE) {
          throw this.#fail(
            'missing-shm',
            `server sent ${n}${hasFd ? ' + fd' : ''} where the shared memory (-1 + fd) belongs`,
          );
        }
        if (!hasFd) {
          throw this.#fail('missing-shm', `server sent ${n} without the shared-memory fd`);
        }
        this.#phase = 'running';
        this.#helloDone = true;
        return { type: 'hello', id: this.#id as number, shm: fd };

      default: // 'running'
        if (n === SHM_MESSAGE) {
          throw this.#fail(
            'duplicate-shm',
            `server sent ${n}${hasFd ? ' + fd' : ''} (shared memory) again after the handshake`,
          );
        }
        return hasFd ? this.#vector(n, fd) : this.#leave(n);
    }
  }

  /**
   * End of stream. `partialBytes`: bytes of an unfinished message left over (0..7). Throws
   * ProtocolError 'truncated' if any, 'incomplete' if the handshake never completed. Ending
   * after the handshake is normal: the server went away, the peers keep what they have.
   */
  end(partialBytes = 0): void {
    if (!Number.isInteger(partialBytes) || partialBytes < 0 || partialBytes >= MESSAGE_SIZE) {
      throw new RangeError(
        `partialBytes must be an integer 0..${MESSAGE_SIZE - 1}, got ${String(partialBytes)}`,
      );
    }
    if (this.#phase === 'failed') throw this.#afterError();
    if (this.#phase === 'ended') return;
    if (partialBytes > 0) {
      throw this.#fail(
        'truncated',
        `stream ended inside a message (${partialBytes} of ${MESSAGE_SIZE} bytes)`,
      );
    }
    if (!this.#helloDone) {
      const missing =
        this.#phase === 'version' ? 'version' : this.#phase === 'id' ? 'own ID' : 'shared memory';
      throw this.#fail('incomplete', `stream ended before the handshake completed (no ${missing})`);
    }
    this.#phase = 'ended';
  }

  #vector(peer: number, fd: F): ClientEvent<F> {
    const own = peer === this.#id;
    const vector = own ? this.#ownVectors : (this.#peers.get(peer) ?? 0);
    if (vector >= this.#maxVectors) {
      throw this.#fail(
        'too-many-vectors',
        `server sent vector ${vector} for ${own ? 'own ID' : 'peer'} ${peer}, ` +
          `but at most ${this.#maxVectors} vectors are allowed`,
      );
    }
    if (own) this.#ownVectors = vector + 1;
    else this.#peers.set(peer, vector + 1);
    return { type: 'vector', peer, vector, fd, own };
  }

  #leave(peer: number): ClientEvent<F> {
    if (peer === this.#id) {
      throw this.#fail('self-leave', `server sent a disconnect for our own ID ${peer}`);
    }
    const vectors = this.#peers.get(peer);
    if (vectors === undefined) {
      throw this.#fail('unknown-peer', `server sent a disconnect for unknown peer ${peer}`);
    }
    // Forget it completely: the ID may come back later with fresh fds starting at vector 0.
    this.#peers.delete(peer);
    return { type: 'peer-left', peer, vectors };
  }

  #fail(reason: ProtocolError['reason'], message: string): ProtocolError {
    const error = new ProtocolError(reason, message);
    this.#phase = 'failed';
    this.#error = error;
    return error;
  }

  #afterError(): ProtocolError {
    return new ProtocolError(
      'after-error',
      `protocol stream already failed: ${this.#error?.message ?? 'unknown error'}`,
      { cause: this.#error },
    );
  }
}

function checkPeerId(id: number, what: string): void {
  if (!Number.isInteger(id) || id < 0 || id > MAX_PEER_ID) {
    throw new RangeError(`${what} must be an integer 0..${MAX_PEER_ID}, got ${String(id)}`);
  }
}

// WireMessage uses an absent `fd` for "no fd", so null/undefined cannot be an fd.
function checkFd(fd: unknown, what: string): void {
  if (fd === null || fd === undefined) throw new TypeError(`${what} is missing`);
}

function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object') return value.constructor?.name ?? 'object';
  return typeof value;
}
