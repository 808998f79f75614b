/**
 * Peer: one participant of an ivshmem network, the way QEMU's ivshmem-doorbell device and
 * ivshmem-client are. Works against our PeerServer or QEMU's own ivshmem-server.
 */
import { EventEmitter, on } from 'node:events';
import { ClosedError, RefusedError, TimeoutError } from '../core/errors.js';
import type { Endpoint, EndpointEvents, PeerVectors, PendingBits } from '../endpoint/endpoint.js';
import { waitForPeer } from '../endpoint/wait-for-peer.js';
import { closeFd } from '../sys/fd.js';
import { InterruptTable, type InterruptCounters } from '../sys/interrupt-table.js';
import { readHeader, type HeaderLayout } from '../protocol/header.js';
import { ClientDecoder, decodeMessage, type ClientEvent } from '../protocol/wire.js';
import { lowBuffer, SharedMemory } from '../sys/shared-memory.js';
import { UnixSocket } from '../sys/unix-socket.js';
import { FdWatcher } from '../sys/watcher.js';
import * as check from '../core/validate.js';

export interface PeerOptions {
  /**
   * Own vectors to wait for before `connect()` resolves. Without it (the protocol has no end
   * mark) the connect sequence is taken as complete once own vectors have arrived, nothing more
   * is there to read, and either they are as many as every other peer's (servers give all the
   * same count) or the socket then stays quiet for 50 ms (a first peer: nobody to compare
   * with). Own vectors arriving later are still added.
   */
  vectors?: number;
  /** Give up connecting after this many ms (default 5000). */
  timeout?: number;
  /** Largest vector count accepted per peer (default 64, as QEMU's contrib server). */
  maxVectors?: number;
  /**
   * Largest shared memory accepted from the server, in bytes (default DEFAULT_MAX_SIZE,
   * 64 GiB). A larger region is refused with a TooLargeError before it is mapped: the server
   * chooses the size, and a hostile one could hand over a sparse object of terabytes.
   */
  maxSize?: number;
  /**
   * Require the bitmask header (a server started with `bitmask: true`); connect() fails with
   * a HeaderError if the shared memory has none, or another version.
   */
  bitmask?: boolean;
}

/**
 * How long a first peer's socket stays quiet after its own vectors before the connect sequence
 * counts as complete: servers send it in one go, but a loaded machine can stop one between two
 * messages (a peer saw 1 of 2 vectors that way).
 */
const QUIET_MS = 50;

/** The default `maxSize` of `Peer.connect`: 64 GiB, beyond the largest BAR QEMU users map in practice. */
export const DEFAULT_MAX_SIZE = 64 * 2 ** 30;

/** An endpoint's events ('interrupt', 'peer-joined', 'peer-left', 'close'), and the server's loss. */
export interface PeerEvents extends EndpointEvents {
  /** The server went away. Known peers can still be rung; no joins or leaves will be seen. */
  'server-lost': [error: Error | null];
}

export class Peer extends EventEmitter<PeerEvents> implements Endpoint {
  #id = -1;
  #shm: SharedMemory | null = null;
  readonly #socket: UnixSocket;
  readonly #socketWatcher: FdWatcher;
  readonly #decoder: ClientDecoder<number>;
  #connected = false;
  #serverLost = false;
  #closed = false;
  #settle: ((error: Error | null) => void) | null = null;
  // Without `vectors`: the wait for a quiet socket after own vectors, and whether it passed.
  #quiet: NodeJS.Timeout | null = null;
  #quietPassed = false;
  readonly #expectedVectors: number | undefined;
  readonly #bitmask: boolean;
  readonly #maxSize: number;
  #layout: HeaderLayout | null = null;
  // The eventfds received (owned there, the one record of who can be rung) and the bitmask
  // ring; every eventfd write and read goes through it, so it is counted where it happens.
  #table: InterruptTable | null = null;

  private constructor(socket: UnixSocket, options: PeerOptions) {
    super();
    this.#socket = socket;
    this.#expectedVectors = options.vectors;
    this.#bitmask = options.bitmask === true;
    this.#maxSize = options.maxSize === undefined ? DEFAULT_MAX_SIZE : check.integer('maxSize', options.maxSize, 1);
    this.#decoder = new ClientDecoder<number>(options.maxVectors === undefined ? {} : { maxVectors: options.maxVectors });
    this.#socketWatcher = socket.watch();
    this.#socketWatcher.on('readable', () => this.#readAll());
    // A poll error (a reset socket): recvmsg tells what really happened (EOF, ECONNRESET).
    this.#socketWatcher.on('error', (error) => {
      this.#readAll();
      this.#lose(error);
    });
  }

  /** Connects, completes the connect sequence, and maps the shared memory. */
  static async connect(socketPath: string, options: PeerOptions = {}): Promise<Peer> {
    check.string('socketPath', socketPath);
    if (options.vectors !== undefined) check.integer('vectors', options.vectors, 1, 1024);
    const timeout = check.integer('timeout', options.timeout ?? 5000, 1);
    const socket = UnixSocket.connect(socketPath);
    let peer: Peer;
    try {
      peer = new Peer(socket, options);
    } catch (error) {
      socket.close(); // e.g. an invalid maxVectors: nothing else was made yet
      throw error;
    }
    const done = new Promise<Error | null>((resolve) => {
      peer.#settle = resolve;
    });
    const timer = setTimeout(
      () => peer.#fail(new TimeoutError(`no complete connect sequence from ${socketPath} within ${timeout} ms`)),
      timeout,
    );
    peer.#socketWatcher.start();
    const error = await done;
    clearTimeout(timer);
    if (error !== null) {
      peer.close();
      throw error;
    }
    return peer;
  }

  /** Own peer ID, assigned by the server. */
  get id(): number {
    return this.#id;
  }

  /** The shared memory, mapped. */
  get shm(): SharedMemory {
    if (this.#shm === null || this.#closed) throw new ClosedError('Peer');
    return this.#shm;
  }

  /** Own interrupt vectors. */
  get vectors(): number {
    return this.#table?.vectorsOf(this.#id) ?? 0;
  }

  get serverLost(): boolean {
    return this.#serverLost;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Other known peers and their vector counts, in the order the server announced them. */
  peers(): PeerVectors[] {
    return this.#table?.peers() ?? [];
  }

  /** Vectors of peer `id` (own ID included); 0 if unknown. */
  vectorsOf(id: number): number {
    return this.#table?.vectorsOf(id) ?? 0;
  }

  /**
   * Resolves once peer `id` is known (its eventfds have arrived): joins are announced by the
   * server asynchronously, so a peer that just connected elsewhere may not be known yet.
   * Rejects with a TimeoutError after `timeout` ms (default 5000), or ClosedError on close.
   */
  waitForPeer(id: number, timeout = 5000): Promise<void> {
    return waitForPeer(this, id, timeout, 'Peer');
  }

  /**
   * Rings `peer` on `vector` (its eventfd for that vector). Ringing oneself is allowed.
   * RangeError for a peer or vector this peer does not know.
   */
  ring(peer: number, vector = 0): void {
    if (this.#closed) throw new ClosedError('Peer');
    check.integer('peer', peer, 0, 65535);
    check.integer('vector', vector, 0, 65535);
    if (!this.#table!.signal(peer, vector)) {
      const known = this.vectorsOf(peer);
      throw new RangeError(
        known === 0 && peer !== this.#id
          ? `peer ${peer} is not known to peer ${this.#id}`
          : `peer ${peer} has no vector ${vector} (it has ${known})`,
      );
    }
  }

  /** The bitmask header's layout (only for a peer connected with `bitmask: true`). */
  get header(): HeaderLayout {
    if (this.#layout === null) throw new RangeError('this peer was not connected with bitmask: true');
    return this.#layout;
  }

  /**
   * The header's pending bits, for BitmaskDoorbell and the bitmask device model (only for a peer
   * connected with `bitmask: true`).
   */
  get pendingBits(): PendingBits {
    void this.header; // the RangeError without the header
    return this.#liveTable().pendingWords!;
  }

  /** Kernel crossings and bitmask events counted since connect (or the last reset). */
  counters(): InterruptCounters {
    return this.#liveTable().counters();
  }

  resetCounters(): void {
    this.#liveTable().resetCounters();
  }

  /** Interrupts as an async iterator: `{ vector, count }`, optionally of one vector only. Ends on close. */
  async *interrupts(vector?: number): AsyncGenerator<{ vector: number; count: number }, void, undefined> {
    if (vector !== undefined) check.integer('vector', vector, 0, 65535);
    const controller = new AbortController();
    const onClose = (): void => controller.abort();
    this.once('close', onClose);
    try {
      for await (const [v, count] of on(this, 'interrupt', { signal: controller.signal }) as AsyncIterable<[number, number]>) {
        if (vector === undefined || v === vector) yield { vector: v, count };
      }
    } catch (error) {
      if (!controller.signal.aborted) throw error;
    } finally {
      this.off('close', onClose);
    }
  }

  /** Leaves the network: closes the socket, the watchers, every eventfd and the mapping. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socketWatcher.close();
    this.#socket.close();
    this.#table?.close(); // the own eventfds' watchers, then every eventfd
    this.#shm?.close();
    this.#stopQuiet();
    this.#settle?.(new ClosedError('Peer'));
    this.#settle = null;
    this.emit('close');
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #readAll(): void {
    for (;;) {
      if (this.#closed || this.#serverLost) return;
      let received;
      try {
        received = this.#socket.recv();
      } catch (error) {
        this.#lose(error as Error);
        return;
      }
      if (received.kind === 'again') {
        if (!this.#connected && this.#expectedVectors === undefined && this.vectors > 0) {
          if (this.#quietPassed || this.#asManyAsOthers()) this.#ready();
          else this.#quiet ??= setTimeout(() => this.#quietFor(), QUIET_MS);
        }
        return;
      }
      if (!this.#connected) this.#stopQuiet(); // more came: quiet again from the next "nothing"
      if (received.kind === 'eof') {
        if (!this.#decoder.helloDone && received.partial === 0) {
          // Closed before the first message: how a full server turns a client away.
          this.#lose(null);
          return;
        }
        try {
          this.#decoder.end(received.partial);
          this.#lose(null);
        } catch (error) {
          this.#lose(error as Error);
        }
        return;
      }
      let event: ClientEvent<number> | null;
      try {
        event = this.#decoder.push(decodeMessage(received.data), received.fd);
      } catch (error) {
        if (received.fd !== null) closeFd(received.fd);
        this.#lose(error as Error);
        return;
      }
      if (event === null) continue;
      const wasConnected = this.#connected;
      let tell: (() => void) | null;
      try {
        tell = this.#apply(event);
      } catch (error) {
        // e.g. the shm fd cannot be mapped, or an fd is not an eventfd: the server is broken.
        this.#lose(error as Error);
        return;
      }
      tell?.();
      // Just connected: let connect()'s caller attach listeners before later messages become
      // events (the watcher is level-triggered, so they are read on the next turn).
      if (!wasConnected && this.#connected) return;
    }
  }

  /**
   * Applies one event to the peer's state. What it should tell listeners comes back as a
   * function to call outside the caller's try: a throwing listener is the application's error
   * (an uncaught exception, as from any emitter), not a broken server.
   */
  #apply(event: ClientEvent<number>): (() => void) | null {
    switch (event.type) {
      case 'hello': {
        this.#id = event.id;
        this.#shm = SharedMemory.fromFd(event.shm, { maxSize: this.#maxSize });
        if (this.#bitmask) {
          this.#layout = readHeader(lowBuffer(this.#shm));
          if (event.id >= this.#layout.maxPeers) {
            throw new RangeError(`peer ID ${event.id} is beyond the header's ${this.#layout.maxPeers} bits`);
          }
        }
        const layout = this.#layout;
        this.#table = new InterruptTable({
          self: event.id,
          onInterrupt: (vector, count) => this.emit('interrupt', vector, count),
          ...(layout === null ? {} : { bitmask: { memory: lowBuffer(this.#shm), layout } }),
        });
        return null;
      }
      case 'vector': {
        // Adopted: the table holds the only copy of the fd (and closes it if it is no eventfd).
        this.#table!.add(event.peer, event.fd);
        if (event.own) {
          if (!this.#connected && this.vectors === this.#expectedVectors) this.#ready();
          return null;
        }
        // A peer joining after we connected is announced once its first vector arrives.
        const peer = event.peer;
        return this.#connected && event.vector === 0 ? () => this.emit('peer-joined', peer) : null;
      }
      case 'peer-left': {
        this.#table!.remove(event.peer);
        const peer = event.peer;
        return this.#connected ? () => this.emit('peer-left', peer) : null;
      }
    }
  }

  #liveTable(): InterruptTable {
    if (this.#closed || this.#table === null) throw new ClosedError('Peer');
    return this.#table;
  }

  /** Every other peer has as many vectors as we have now (and there is one). */
  #asManyAsOthers(): boolean {
    const others = this.peers();
    return others.length > 0 && others.every((p) => p.vectors === this.vectors);
  }

  #quietFor(): void {
    this.#quiet = null;
    this.#quietPassed = true;
    this.#readAll(); // anything that came meanwhile first (a timer runs before the poll)
  }

  #stopQuiet(): void {
    if (this.#quiet !== null) clearTimeout(this.#quiet);
    this.#quiet = null;
    this.#quietPassed = false;
  }

  #ready(): void {
    this.#stopQuiet();
    this.#connected = true;
    const settle = this.#settle;
    this.#settle = null;
    settle?.(null);
  }

  #fail(error: Error): void {
    this.#stopQuiet();
    const settle = this.#settle;
    this.#settle = null;
    settle?.(error);
  }

  /** The server is gone (EOF or a protocol error). Before the sequence completed that is a failure. */
  #lose(error: Error | null): void {
    if (this.#serverLost) return;
    this.#socketWatcher.close();
    if (!this.#connected) {
      this.#fail(
        error ??
          new RefusedError(
            this.#decoder.helloDone
              ? 'the server closed the connection during the connect sequence'
              : 'the server closed the connection before the connect sequence (full, or not an ivshmem server)',
          ),
      );
      return;
    }
    this.#serverLost = true;
    this.emit('server-lost', error);
  }
}

