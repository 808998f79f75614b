/**
 * Servers, peers and anything else with a close() opened by one test in this process, closed
 * in afterEach (last opened, first closed); and totals of doorbell counters.
 */
import { Peer, PeerServer, type InterruptCounters, type PeerOptions, type PeerServerOptions } from '../../lib/index.js';
import { uniqueSocketPath } from './paths.js';
import { WAIT_MS } from './wait.js';

export class Resources {
  readonly #closers: (() => void)[] = [];
  readonly #server: PeerServerOptions;
  readonly #peer: PeerOptions;

  /** `defaults`: options of every listen() / connect() (each call's own options win). */
  constructor(defaults: { server?: PeerServerOptions; peer?: PeerOptions } = {}) {
    this.#server = defaults.server ?? {};
    this.#peer = defaults.peer ?? {};
  }

  /** A PeerServer on a fresh socket path. */
  listen(tag: string, options: PeerServerOptions = {}): PeerServer {
    const server = PeerServer.listen({ socketPath: uniqueSocketPath(tag), ...this.#server, ...options });
    this.#closers.push(() => server.close());
    return server;
  }

  async connect(server: PeerServer | string, options: PeerOptions = {}): Promise<Peer> {
    const path = typeof server === 'string' ? server : server.socketPath;
    const peer = await Peer.connect(path, { timeout: WAIT_MS, ...this.#peer, ...options });
    this.#closers.push(() => peer.close());
    return peer;
  }

  /** Anything else with a close(): devices, doorbells, channels. Closed before what was registered earlier. */
  track<T extends { close(): void }>(thing: T): T {
    this.#closers.push(() => thing.close());
    return thing;
  }

  closeAll(): void {
    const errors: unknown[] = [];
    for (const close of this.#closers.splice(0).reverse()) {
      try {
        close();
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'closing test resources failed');
  }
}

/** The sum of several peers' counters. */
export function sumCounters(list: readonly InterruptCounters[]): InterruptCounters {
  const total: InterruptCounters = { rings: 0, suppressed: 0, signals: 0, eventfdWrites: 0, doorbellWrites: 0, eventfdReads: 0, wakeups: 0, spurious: 0, interrupts: 0, acks: 0 };
  for (const c of list) for (const k of Object.keys(total) as (keyof InterruptCounters)[]) total[k] += c[k];
  return total;
}
