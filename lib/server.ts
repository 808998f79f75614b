/**
 * PeerServer: QEMU's ivshmem-server, byte for byte on the wire, done so that no single client
 * can hurt the others. It owns the shared memory and every eventfd, hands copies to peers over
 * a UNIX socket and tells everyone who joined and who left.
 */
import { EventEmitter } from 'node:events';
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import { EventFd } from './eventfd.js';
import { InUseError, isSystemError } from './errors.js';
import { native } from './binding.js';
import { encodeMessage, greeting, leave, MAX_PEER_ID, peerVectors, type WireMessage } from './protocol.js';
import { lowBuffer, SharedMemory } from './shared-memory.js';
import { UnixSocket } from './unix-socket.js';
import { FdWatcher } from './watcher.js';
import { BitWords, headerLayout, writeHeader, type HeaderLayout } from './header.js';
import * as check from './validate.js';

export const DEFAULT_SOCKET_PATH = '/tmp/ivshmem_socket';
export const DEFAULT_SIZE = 4 * 1024 * 1024;
export const MAX_SERVER_VECTORS = 64;
export const DEFAULT_MAX_PEERS = 64;

export interface PeerServerOptions {
  /** Where to listen (default /tmp/ivshmem_socket, as QEMU's server). */
  socketPath?: string;
  /** Named POSIX shm object to create (removed on close); without it, an anonymous memfd. */
  shmName?: string;
  /**
   * Bytes of shared memory (default 4 MiB). QEMU maps it as a PCI BAR and aborts unless the
   * size is a power of two, so the server rounds up to one (at least 4096); `size` and
   * `requestedSize` tell whether it did.
   */
  size?: number;
  /** Interrupt vectors per peer, 1..64 (default 1). */
  vectors?: number;
  /** Peers served at once (default 64); a client beyond it is disconnected at once. */
  maxPeers?: number;
  /** Socket file permissions (default 0o600). */
  mode?: number;
  /**
   * Lay out the bitmask header (docs/header.md) at the start of the shared memory: pending
   * and live bits for `maxPeers` peers, maintained by the server. IDs then stay below the
   * header's bit count (maxPeers rounded up to 64). Default false.
   */
  bitmask?: boolean;
  /**
   * Close on SIGINT/SIGTERM (default true). If nothing else listens for the signal, it is
   * raised again after closing so the process ends as it would have.
   */
  handleSignals?: boolean;
}

export interface PeerInfo {
  readonly id: number;
  readonly vectors: number;
}

export type LeaveReason =
  | 'disconnected'
  /** A send to it failed (it vanished), or it left more unread than MAX_QUEUED. */
  | 'send-failed'
  | 'server-closed';

/** Messages queued for a client that does not read before it is dropped (each may hold an fd). */
export const MAX_QUEUED = 4096;

export interface PeerServerEvents {
  'peer-joined': [peer: PeerInfo];
  'peer-left': [peer: PeerInfo, reason: LeaveReason];
  /** A client was turned away because `maxPeers` were connected. */
  'peer-refused': [reason: string];
  /** Something went wrong that did not stop the server (accept failed, a send failed). */
  warning: [error: Error];
  close: [];
}

/** What is waiting to go out to one client: the bytes and a private copy of the fd to pass. */
interface Pending {
  readonly data: Uint8Array;
  fd: number | null;
}

class Client {
  readonly eventfds: EventFd[] = [];
  readonly queue: Pending[] = [];
  writableWatched = false;
  /** Told to the others: only then does its departure concern them. */
  announced = false;
  /** Peers whose eventfds this client was sent: only those may be reported gone to it. */
  readonly knows = new Set<number>();
  constructor(
    readonly id: number,
    readonly socket: UnixSocket,
    readonly watcher: FdWatcher,
  ) {}
}

export function roundUpToPowerOfTwo(size: number): number {
  let n = 4096;
  while (n < size) n *= 2;
  return n;
}

export class PeerServer extends EventEmitter<PeerServerEvents> implements Disposable {
  readonly socketPath: string;
  readonly vectors: number;
  readonly maxPeers: number;
  readonly size: number;
  readonly requestedSize: number;
  readonly shm: SharedMemory;
  readonly #listener: UnixSocket;
  readonly #acceptWatcher: FdWatcher;
  // Insertion order = connect order, which is the order peers are advertised to newcomers.
  readonly #clients = new Map<number, Client>();
  #nextId = 0;
  #closed = false;
  readonly #signalHandler: ((signal: NodeJS.Signals) => void) | null = null;

  /** The bitmask header's layout, or null without `bitmask`. */
  readonly header: HeaderLayout | null;
  readonly #pending: BitWords | null = null;
  readonly #live: BitWords | null = null;
  /** IDs wrap here: 65536, or the header's bit count in bitmask mode. */
  readonly #idLimit: number;

  private constructor(options: Required<Omit<PeerServerOptions, 'shmName' | 'handleSignals' | 'bitmask'>> & {
    shmName: string | undefined;
    handleSignals: boolean;
    bitmask: boolean;
  }) {
    super();
    this.socketPath = options.socketPath;
    this.vectors = options.vectors;
    this.maxPeers = options.maxPeers;
    this.requestedSize = options.size;
    this.header = options.bitmask ? headerLayout(options.maxPeers) : null;
    this.#idLimit = this.header === null ? MAX_PEER_ID + 1 : this.header.maxPeers;
    this.size = roundUpToPowerOfTwo(Math.max(options.size, this.header === null ? 0 : this.header.dataOffset + 1));
    removeStaleSocket(this.socketPath);
    this.shm = SharedMemory.create({ size: this.size, ...(options.shmName === undefined ? {} : { name: options.shmName }) });
    let listener: UnixSocket | null = null;
    try {
      // Every peer gets this fd: sealed, none of them can truncate the memory under the others
      // (SIGBUS) or seal it against later mappings (F_SEAL_FUTURE_WRITE). A named object cannot
      // be sealed; #repairMemory() guards that case as far as it can be guarded.
      if (this.shm.name === null) this.shm.seal();
      if (this.header !== null) {
        const low = lowBuffer(this.shm);
        writeHeader(low, this.header);
        this.#pending = new BitWords(low, this.header.pendingOffset, this.header.words);
        this.#live = new BitWords(low, this.header.liveOffset, this.header.words);
      }
      listener = UnixSocket.listen(this.socketPath, { mode: options.mode, backlog: 10 });
      this.#acceptWatcher = listener.watch();
    } catch (error) {
      if (listener !== null) {
        listener.close();
        unlinkSync(this.socketPath);
      }
      this.#releaseShm();
      throw error;
    }
    this.#listener = listener;
    this.#acceptWatcher.on('readable', () => this.#acceptAll());
    this.#acceptWatcher.on('error', (error) => this.emit('warning', error));
    this.#acceptWatcher.start();
    if (options.handleSignals) {
      this.#signalHandler = (signal) => {
        this.close();
        // Only re-raise if no one else wanted the signal: then the default action was expected.
        if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
      };
      process.once('SIGINT', this.#signalHandler);
      process.once('SIGTERM', this.#signalHandler);
    }
  }

  /** Creates the shared memory and starts listening; clients can connect once this returns. */
  static listen(options: PeerServerOptions = {}): PeerServer {
    const socketPath = options.socketPath ?? DEFAULT_SOCKET_PATH;
    check.string('socketPath', socketPath);
    const size = check.integer('size', options.size ?? DEFAULT_SIZE, 1, 2 ** 40);
    const vectors = check.integer('vectors', options.vectors ?? 1, 1, MAX_SERVER_VECTORS);
    const maxPeers = check.integer('maxPeers', options.maxPeers ?? DEFAULT_MAX_PEERS, 1, MAX_PEER_ID + 1);
    const mode = check.integer('mode', options.mode ?? 0o600, 0, 0o777);
    if (options.shmName !== undefined) check.string('shmName', options.shmName);
    const handleSignals = options.handleSignals === undefined ? true : check.bool('handleSignals', options.handleSignals);
    const bitmask = options.bitmask === undefined ? false : check.bool('bitmask', options.bitmask);
    return new PeerServer({ socketPath, size, vectors, maxPeers, mode, shmName: options.shmName, handleSignals, bitmask });
  }

  /** Where the application's bytes begin: after the header in bitmask mode, else 0. */
  get dataOffset(): number {
    return this.header?.dataOffset ?? 0;
  }

  /** The peers connected now, in connect order. */
  peers(): PeerInfo[] {
    return [...this.#clients.values()].map((c) => ({ id: c.id, vectors: c.eventfds.length }));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Disconnects every client, removes the socket file and the named shm, closes every fd.
   * Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#signalHandler !== null) {
      process.off('SIGINT', this.#signalHandler);
      process.off('SIGTERM', this.#signalHandler);
    }
    this.#acceptWatcher.close();
    this.#listener.close();
    try {
      unlinkSync(this.socketPath);
    } catch {
      // already gone (removed by hand, or replaced): nothing of ours to remove
    }
    for (const client of [...this.#clients.values()]) this.#drop(client, 'server-closed', false);
    this.#releaseShm();
    this.emit('close');
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #releaseShm(): void {
    if (this.shm === undefined) return;
    if (this.shm.name !== null) {
      try {
        this.shm.unlink();
      } catch {
        // someone unlinked it already
      }
    }
    this.shm.close();
  }

  #acceptAll(): void {
    for (;;) {
      if (this.#closed) return; // a listener closed the server from inside this loop
      let socket: UnixSocket | null;
      try {
        socket = this.#listener.accept();
      } catch (error) {
        // EMFILE and the like: report and keep serving; the connection stays queued.
        this.emit('warning', error as Error);
        return;
      }
      if (socket === null) return;
      this.#admit(socket);
    }
  }

  /**
   * A named object is not sealed: anyone who can open it (any peer) can truncate it, and the
   * server's next header write would then die of SIGBUS, and newcomers map an empty object.
   * Before touching the memory or handing it out, grow it back to its size (what was cut off
   * reads as zeros from then on) and rewrite the header bits from the server's own state.
   * Who did it cannot be told, so nobody is dropped; the window between this check and the
   * write remains (docs/security.md).
   */
  #repairMemory(): void {
    if (this.shm.name === null || this.shm.closed) return; // sealed memfd: cannot shrink
    let before: number;
    try {
      before = native.growFd(this.shm.fd, this.size);
    } catch (error) {
      this.emit('warning', error as Error);
      return;
    }
    if (before >= this.size) return;
    this.emit(
      'warning',
      new Error(
        `shared memory ${this.shm.name} was truncated to ${before} bytes by someone who can open it; grown back to ${this.size} bytes (bytes from ${before} on now read as zero)`,
      ),
    );
    if (this.header !== null && before < this.header.dataOffset) {
      writeHeader(lowBuffer(this.shm), this.header);
      for (const id of this.#clients.keys()) this.#live!.set(id);
    }
  }

  #admit(socket: UnixSocket): void {
    this.#repairMemory();
    if (this.#closed) {
      socket.close(); // a 'warning' listener closed the server
      return;
    }
    const id = this.#clients.size < this.maxPeers ? this.#allocateId() : null;
    if (id === null) {
      socket.close();
      this.emit('peer-refused', `${this.#clients.size} peers connected, the maximum is ${this.maxPeers}`);
      return;
    }
    let client: Client;
    const eventfds: EventFd[] = [];
    try {
      for (let v = 0; v < this.vectors; v++) eventfds.push(new EventFd());
      const watcher = socket.watch();
      client = new Client(id, socket, watcher);
    } catch (error) {
      for (const e of eventfds) e.close();
      socket.close();
      this.emit('warning', error as Error);
      return;
    }
    client.eventfds.push(...eventfds);
    // Any byte or EOF from a client means it is gone (QEMU's clients never send).
    client.watcher.on('readable', () => this.#drop(client, 'disconnected'));
    client.watcher.on('writable', () => this.#flush(client));
    // ECONNRESET and the like from poll: the client is gone all the same.
    client.watcher.on('error', () => this.#drop(client, 'disconnected'));
    client.watcher.start();

    this.#clients.set(id, client);
    // A fresh peer starts with no pending interrupt, and is live before anyone hears of it.
    this.#pending?.clear(id);
    this.#live?.set(id);
    const own = client.eventfds.map((e) => e.fd);
    const here = (): boolean => this.#clients.get(id) === client;
    // §3.2: version, ID, shm first (QEMU blocks in realize until it has the shm), then the
    // newcomer's fds to everyone else, then everyone else's to it, then its own. A client can
    // vanish at any send (EPIPE): from then on there is nobody to greet or to announce.
    this.#send(client, greeting(id, this.shm.fd));
    if (!here()) return;
    client.announced = true;
    for (const other of this.#others(client)) {
      other.knows.add(id);
      this.#send(other, peerVectors(id, own));
    }
    for (const other of this.#others(client)) {
      if (!here()) return;
      client.knows.add(other.id);
      this.#send(client, peerVectors(other.id, other.eventfds.map((e) => e.fd)));
    }
    if (!here()) return;
    this.#send(client, peerVectors(id, own));
    if (here()) this.emit('peer-joined', { id, vectors: this.vectors });
  }

  /** The clients other than `client` still connected, in connect order. */
  #others(client: Client): Client[] {
    return [...this.#clients.values()].filter((c) => c !== client);
  }

  /** IDs count up from 0 and wrap (at 65536, or the header's bits), skipping IDs in use: a departed ID is not reused soon. */
  #allocateId(): number {
    for (;;) {
      const id = this.#nextId;
      this.#nextId = (this.#nextId + 1) % this.#idLimit;
      if (!this.#clients.has(id)) return id;
    }
  }

  #send(client: Client, messages: readonly WireMessage<number>[]): void {
    if (this.#clients.get(client.id) !== client) return; // dropped meanwhile
    for (const message of messages) {
      const data = encodeMessage(message.value);
      if (client.queue.length === 0) {
        let sent: boolean;
        try {
          sent = client.socket.send(data, message.fd);
        } catch (error) {
          this.emit('warning', withPeer(error, client.id));
          this.#drop(client, 'send-failed');
          return;
        }
        if (sent) continue;
      }
      // The client is not reading right now. Queue with a private copy of the fd (the original
      // may be closed, its owner leaving, before the client drains), up to a bound: a client
      // that never reads must not pin the server's fds without limit.
      if (client.queue.length >= MAX_QUEUED) {
        this.emit('warning', new Error(`peer ${client.id}: ${MAX_QUEUED} messages unread, dropping it`));
        this.#drop(client, 'send-failed');
        return;
      }
      let copy: number | null = null;
      try {
        if (message.fd !== undefined) copy = native.dupFd(message.fd);
      } catch (error) {
        this.emit('warning', withPeer(error, client.id));
        this.#drop(client, 'send-failed');
        return;
      }
      client.queue.push({ data, fd: copy });
    }
    if (client.queue.length > 0 && !client.writableWatched) {
      client.writableWatched = true;
      client.watcher.start({ readable: true, writable: true });
    }
  }

  #flush(client: Client): void {
    while (client.queue.length > 0) {
      const head = client.queue[0]!;
      let sent: boolean;
      try {
        sent = client.socket.send(head.data, head.fd ?? undefined);
      } catch (error) {
        this.emit('warning', withPeer(error, client.id));
        this.#drop(client, 'send-failed');
        return;
      }
      if (!sent) return;
      client.queue.shift();
      if (head.fd !== null) native.closeFd(head.fd);
    }
    client.writableWatched = false;
    client.watcher.start({ readable: true });
  }

  #drop(client: Client, reason: LeaveReason, notify = true): void {
    if (this.#clients.get(client.id) !== client) return;
    this.#clients.delete(client.id);
    client.watcher.close();
    client.socket.close();
    for (const pending of client.queue) if (pending.fd !== null) native.closeFd(pending.fd);
    client.queue.length = 0;
    const info = { id: client.id, vectors: client.eventfds.length };
    for (const e of client.eventfds) e.close();
    // Not live any more, and a bit it left set must not suppress rings to a future holder of the ID.
    if (!this.shm.closed) {
      this.#repairMemory();
      this.#live?.clear(client.id);
      this.#pending?.clear(client.id);
    }
    if (!client.announced) return; // never greeted: nobody heard of it
    if (notify) {
      for (const other of [...this.#clients.values()]) {
        // A newcomer that has not been sent the leaver's fds yet never hears of it at all.
        if (other.knows.delete(client.id)) this.#send(other, [leave(client.id)]);
      }
    }
    this.emit('peer-left', info, reason);
  }
}

function withPeer(error: unknown, id: number): Error {
  const e = error instanceof Error ? error : new Error(String(error));
  e.message = `peer ${id}: ${e.message}`;
  return e;
}

/**
 * A socket file left by a dead server is replaced; one a live server answers on is not stolen.
 */
function removeStaleSocket(path: string): void {
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) {
    throw new InUseError(`${path} exists and is not a socket; refusing to replace it`);
  }
  let probe: UnixSocket;
  try {
    probe = UnixSocket.connect(path);
  } catch (error) {
    if (isSystemError(error) && error.code === 'ECONNREFUSED') {
      unlinkSync(path);
      return;
    }
    if (isSystemError(error) && error.code === 'ENOENT') return;
    throw error;
  }
  probe.close();
  throw new InUseError(`a server is already listening on ${path}`);
}
