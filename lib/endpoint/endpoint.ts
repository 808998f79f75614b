/**
 * The endpoint: this process's peer of an ivshmem network, as everything above the network sees
 * it. On the host a Peer is one (eventfds from an ivshmem server); inside a VM the ivshmem PCI
 * device will be one (BAR2 memory, the Doorbell register, MSI-X vectors). BitmaskDoorbell,
 * channels and the device models work over this interface only, so they work the same on both.
 */
import type { HeaderLayout } from '../protocol/header.js';
import type { InterruptCounters } from '../sys/interrupt-table.js';
import type { MemoryView } from '../sys/shared-memory.js';

export interface EndpointEvents {
  /** Own vector `vector` was rung (`count` rings coalesced since the last delivery; in a VM, interrupts taken: see countsInjections). */
  interrupt: [vector: number, count: number];
  /** Peer `id` can be rung from now on. */
  'peer-joined': [id: number];
  /** Peer `id` is gone: it can no longer be rung. */
  'peer-left': [id: number];
  /** The endpoint closed (and with it its memory). */
  close: [];
}

/** A live peer and how many interrupt vectors it can be rung on. */
export interface PeerVectors {
  id: number;
  vectors: number;
}

/**
 * The bitmask header's pending bits (docs/header.md), as this endpoint sets, clears and tests
 * them. Only the 0->1 edge of a ring signals, in whatever way the endpoint rings a peer's vector
 * 0 (an eventfd write on the host, a Doorbell write in a VM). BitmaskDoorbell runs the receive
 * rule over these; applications use BitmaskDoorbell.
 */
export interface PendingBits {
  /** Sets `dest`'s bit: true if that made its 0->1 edge (and signalled it), false if suppressed. RangeError for a peer that cannot be rung. */
  ring(dest: number): boolean;
  /** Rings every other live peer; returns how many were signalled (the others were pending). */
  broadcast(): number;
  /** Clears the own bit: true if it was set. */
  ack(): boolean;
  /** Sets the own bit without signalling: true if it was set already. */
  claim(): boolean;
  /** Whether the own bit is set. */
  pending(): boolean;
}

export interface Endpoint extends Disposable {
  /** Own peer ID. */
  readonly id: number;
  /** The shared memory. ClosedError once closed. */
  readonly shm: MemoryView;
  /** The bitmask header's layout; RangeError if the memory has none. */
  readonly header: HeaderLayout;
  /** The header's pending bits; RangeError without the header, ClosedError once closed. */
  readonly pendingBits: PendingBits;
  /** Own interrupt vectors. */
  readonly vectors: number;
  readonly closed: boolean;
  /**
   * What the `count` of an 'interrupt' event counts. true: interrupts the CPU really took (a
   * device in a VM: each MSI-X message the guest kernel handled). false or absent: rings (a host
   * peer's eventfd count), which a VM's device would have coalesced into one injection per drain.
   * The device models count injections by it.
   */
  readonly countsInjections?: boolean;
  /** The other live peers that can be rung. */
  peers(): PeerVectors[];
  /** Vectors of peer `id` (own ID included); 0 if it cannot be rung. */
  vectorsOf(id: number): number;
  /** Rings `peer` on `vector` (own ID included). RangeError for a peer or vector not known. */
  ring(peer: number, vector?: number): void;
  /** Kernel crossings and bitmask events counted since the start (or the last reset). */
  counters(): InterruptCounters;
  resetCounters(): void;
  // Listening only (emitting is the endpoint's own business), one signature per event so that
  // any emitter of a superset of these events (a Peer's has 'server-lost' too) fits.
  on(event: 'interrupt', listener: (...args: EndpointEvents['interrupt']) => void): this;
  on(event: 'peer-joined' | 'peer-left', listener: (...args: EndpointEvents['peer-joined']) => void): this;
  on(event: 'close', listener: () => void): this;
  once(event: 'interrupt', listener: (...args: EndpointEvents['interrupt']) => void): this;
  once(event: 'peer-joined' | 'peer-left', listener: (...args: EndpointEvents['peer-joined']) => void): this;
  once(event: 'close', listener: () => void): this;
  off(event: 'interrupt', listener: (...args: EndpointEvents['interrupt']) => void): this;
  off(event: 'peer-joined' | 'peer-left', listener: (...args: EndpointEvents['peer-joined']) => void): this;
  off(event: 'close', listener: () => void): this;
  /** Leaves the network and releases everything the endpoint owns, in order. Idempotent. */
  close(): void;
}
