/**
 * What the three device models share: the peer they sit on (any Endpoint), the intercept
 * counter, the interrupt subscription, and an idempotent close.
 */
import { EventEmitter } from 'node:events';
import { ClosedError } from '../core/errors.js';
import type { Endpoint } from '../endpoint/endpoint.js';
import { InterceptCounter, type DesignName, type DeviceStats, type RegisterMap } from './registers.js';

// Event maps as node:events types them (listener argument tuples by event name).
/** A device's events: name -> argument list. */
export type EventMap<T> = Record<keyof T, unknown[]>;

export abstract class DeviceModel<M extends RegisterMap, E extends EventMap<E>> extends EventEmitter<E> implements Disposable {
  protected readonly peer: Endpoint;
  protected readonly counter: InterceptCounter<M>;
  #closed = false;
  // A host peer's count is rings, which a VM's device would coalesce into one injection per
  // drain; a device in a VM counts the injections it really took (GuestDevice: MSI-X messages).
  readonly #countsInjections: boolean;
  readonly #onInterrupt = (vector: number, count: number): void => {
    if (!this.#closed) this.interrupted(vector, this.#countsInjections ? count : 1);
  };
  // The device goes with its peer (and the memory its registers live in).
  readonly #onPeerClose = (): void => this.close();

  constructor(design: DesignName, registers: M, peer: Endpoint) {
    super();
    this.peer = peer;
    this.#countsInjections = peer.countsInjections === true;
    this.counter = new InterceptCounter(design, registers, peer);
    peer.on('interrupt', this.#onInterrupt);
    peer.once('close', this.#onPeerClose);
  }

  /** An own eventfd was signalled (and drained) on `vector`, standing for `injections` interrupts: model the device's reaction. */
  protected abstract interrupted(vector: number, injections: number): void;

  /** One plain object of every count since creation or the last resetStats(). */
  stats(): DeviceStats {
    return this.counter.stats();
  }

  resetStats(): void {
    this.counter.reset();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops modelling (the peer stays open). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.peer.off('interrupt', this.#onInterrupt);
    this.peer.off('close', this.#onPeerClose);
    this.closing();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Further cleanup of a subclass, once. */
  protected closing(): void {}

  protected live(): void {
    if (this.#closed) throw new ClosedError(this.constructor.name);
  }
}
