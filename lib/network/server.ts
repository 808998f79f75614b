/**
 * PeerServer: QEMU's ivshmem-server, byte for byte on the wire, done so that no single client
 * can hurt the others. It owns the shared memory and every eventfd, hands copies to peers over
 * a UNIX socket and tells everyone who joined and who left.
 */
import { EventEmitter } from 'node:events';
import { existsSync, lstatSync, type Stats, unlinkSync } from 'node:fs';
import { EventFd } from '../sys/eventfd.js';
import { InUseError, isSystemError } from '../core/errors.js';
import { native } from '../sys/binding.js';
import { SpareFd } from '../sys/fd.js';
import { encodeMessage, greeting, leave, MAX_PEER_ID, peerVectors, type WireMessage } from '../protocol/wire.js';
import { lowBuffer, normalizeShmName, SharedMemory } from '../sys/shared-memory.js';
import { UnixSocket } from '../sys/unix-socket.js';
import { FdWatcher } from '../sys/watcher.js';
import { BitWords, HEADER_MAGIC, HeaderField, headerLayout, LeaseWords, writeHeader, type HeaderLayout } from '../protocol/header.js';
import * as check from '../core/validate.js';

export const DEFAULT_SOCKET_PATH = '/tmp/ivshmem_socket';
export const DEFAULT_SIZE = 4 * 1024 * 1024;
export const MAX_SERVER_VECTORS = 64;
/** The largest shared memory the server makes (1 TiB). */
export const MAX_SERVER_SIZE = 2 ** 40;
export const DEFAULT_MAX_PEERS = 64;

export interface PeerServerOptions {
  /** Where to listen (default /tmp/ivshmem_socket, as QEMU's server). */
  socketPath?: string;
  /** Named POSIX shm object to create (removed on close); without it, an anonymous memfd. */
  shmName?: string;
  /**
   * What to do when the object `shmName` exists already (default 'fail'). Only ever after the
   * socket check: a live server answering on `socketPath` is refused before its memory is
   * touched (InUseError), so an object found here is taken as left by a server that died.
   *
   * - 'fail': the EEXIST error of shm_open, explained.
   * - 'reuse': as QEMU's ivshmem-server (shm_open without O_EXCL): the object is opened with its
   *   contents and grown to `size` if smaller. It is never shrunk (whoever still maps it would
   *   die of SIGBUS): a larger one is kept at its size, rounded up to a power of two (`size`
   *   then exceeds `leftoverShm.wantedSize`). Not reused (the EEXIST error, saying why) if it
   *   is not a regular object, belongs to another user, or is open to group or others (mode &
   *   077: someone else may hold it, or planted it to read the memory). Removed on close like
   *   a created one; left in place if the server fails to start.
   * - 'replace': the object is removed (shm_unlink) and a new, zero-filled one of `size` bytes
   *   created. Whoever still maps the old one keeps the old memory.
   *
   * Either way any bitmask header found at its start is cleared (from byte 0 to its dataOffset)
   * and, with `bitmask`, written afresh: no old pending, live or lease bit survives. The other
   * bytes keep their contents. `leftoverShm` tells what was done.
   */
  existingShm?: ExistingShmPolicy;
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
   * Bitmask mode: a peer that has taken a lease (docs/header.md) and lets it stand still this
   * many ms is announced as gone ('peer-left', reason 'lease-expired'), and as joined again
   * when it renews it; one that clears its lease is gone at once ('lease-released'). How the
   * death of a program inside a VM is seen: QEMU itself stays connected. Default 2000; 0 turns
   * leases off. Leases are words in the shared memory: any holder of it can forge them (see
   * docs/security.md).
   */
  leaseTimeout?: number;
}

export type ExistingShmPolicy = 'fail' | 'reuse' | 'replace';

/** A named object the server found at its name and took over (`existingShm`). */
export interface LeftoverShm {
  /** '/NAME'. */
  readonly name: string;
  /** 'reused': opened with its contents (grown if smaller); 'replaced': removed, and a new one created. */
  readonly action: 'reused' | 'replaced';
  /** Its size in bytes as found. */
  readonly foundSize: number;
  /** The size the server would have created: less than the server's `size` when a larger object was kept. */
  readonly wantedSize: number;
}

export interface PeerInfo {
  readonly id: number;
  readonly vectors: number;
}

export type LeaveReason =
  | 'disconnected'
  /** A send to it failed: it vanished, or the system refused (out of fds, ...). */
  | 'send-failed'
  /** It left `maxQueued` messages unread (beyond the few its socket holds). */
  | 'not-reading'
  /** Its lease stood still for `leaseTimeout` ms: the program behind it is gone (its VM may stay). */
  | 'lease-expired'
  /** It cleared its lease: the program closed its device (its VM stays). */
  | 'lease-released'
  | 'server-closed';

/** The least `maxQueued`: messages queued for a client that does not read before it is dropped. */
export const MAX_QUEUED = 4096;

/**
 * SO_SNDBUF of each client's socket. Linux doubles it, to 8 KiB: some 11 messages at 768 bytes of
 * its accounting each; the rest waits in the client's queue here. What the kernel holds for a
 * client, the client can pin: those fds count against the server user's RLIMIT_NOFILE (sendmsg
 * fails with ETOOMANYREFS beyond it) until it reads them or closes its socket, even after the
 * server has dropped it. At 11 each, 64 clients that never read pin some 700; at Linux's default
 * (208 KiB) 20 pinned more than 1024. The queue refers to fds the server holds anyway.
 */
const CLIENT_SEND_BUFFER = 4096;

/** How often the lease words are looked at, and the default lease timeout. */
const LEASE_TICK_MS = 100;
export const DEFAULT_LEASE_TIMEOUT = 2000;

/** How long accepting pauses after a failure that the spare fd cannot get round. */
const ACCEPT_RETRY_MS = 100;

export interface PeerServerEvents {
  'peer-joined': [peer: PeerInfo];
  'peer-left': [peer: PeerInfo, reason: LeaveReason];
  /** A client was turned away: `maxPeers` were connected, or the server was out of fds. */
  'peer-refused': [reason: string];
  /** Something went wrong that did not stop the server (accept failed, a send failed). */
  warning: [error: Error];
  close: [];
}

/** What is waiting to go out to one client: the bytes and the fd to pass with them. */
interface Pending {
  readonly data: Uint8Array;
  fd: number | null;
  /**
   * The peer whose eventfd `fd` is: open for as long as that peer is connected (on its way out
   * it takes its unsent fds back, see #forget). Null: the server's own fd (the shm), or a
   * private copy (`copy`).
   */
  owner: Client | null;
  /** `fd` is a private copy, closed once sent. */
  copy: boolean;
}

class Client {
  readonly eventfds: EventFd[] = [];
  readonly queue: Pending[] = [];
  writableWatched = false;
  /** Told to the others: only then does its departure concern them. */
  announced = false;
  /** Peers whose eventfds this client was sent: only those may be reported gone to it. */
  readonly knows = new Set<number>();
  /** Its lease expired or was released: announced as gone to the others, though still connected. */
  dormant = false;
  /** The lease word last seen, and when it last changed. */
  lease = 0;
  leaseChangedAt = 0;
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
  /** The named object found at `shmName` and reused or replaced (`existingShm`), else null. */
  readonly leftoverShm: LeftoverShm | null;
  readonly #listener: UnixSocket;
  readonly #acceptWatcher: FdWatcher;
  // Insertion order = connect order, which is the order peers are advertised to newcomers.
  readonly #clients = new Map<number, Client>();
  #nextId = 0;
  #closed = false;
  /**
   * Messages queued for one client that does not read before it is dropped as 'not-reading':
   * twice what a newcomer to a full server is sent, at least MAX_QUEUED. Queued messages cost
   * memory, not fds, and a client's queue only holds announcements of peers still connected
   * (and departures of those it was told of), so this bounds only the pathological.
   */
  readonly maxQueued: number;
  /** A slot of the fd table kept to refuse connections when it is full (EMFILE), as libuv does. */
  readonly #spare: SpareFd;
  /** Running out of fds (or failing to accept) has been reported, and no peer has joined since. */
  #admitTrouble = false;
  #acceptRetry: NodeJS.Timeout | null = null;

  /** The bitmask header's layout, or null without `bitmask`. */
  readonly header: HeaderLayout | null;
  readonly #pending: BitWords | null = null;
  readonly #live: BitWords | null = null;
  readonly #leases: LeaseWords | null = null;
  readonly leaseTimeout: number;
  #leaseTimer: NodeJS.Timeout | null = null;
  /** IDs wrap here: 65536, or the header's bit count in bitmask mode. */
  readonly #idLimit: number;

  private constructor(options: Required<Omit<PeerServerOptions, 'shmName' | 'bitmask' | 'existingShm'>> & {
    shmName: string | undefined;
    bitmask: boolean;
    existingShm: ExistingShmPolicy;
  }) {
    super();
    this.socketPath = options.socketPath;
    this.vectors = options.vectors;
    this.maxPeers = options.maxPeers;
    this.requestedSize = options.size;
    this.leaseTimeout = options.leaseTimeout;
    this.header = options.bitmask ? headerLayout(options.maxPeers) : null;
    this.#idLimit = this.header === null ? MAX_PEER_ID + 1 : this.header.maxPeers;
    const wanted = roundUpToPowerOfTwo(Math.max(options.size, this.header === null ? 0 : this.header.dataOffset + 1));
    // First the socket: a live server's path is refused before its memory is looked at.
    removeStaleSocket(this.socketPath);
    if (options.shmName === undefined) {
      this.shm = SharedMemory.create({ size: wanted });
      this.leftoverShm = null;
    } else {
      ({ shm: this.shm, leftover: this.leftoverShm } = createNamedShm(options.shmName, wanted, options.existingShm));
    }
    this.size = this.shm.size;
    let listener: UnixSocket | null = null;
    try {
      // Every peer gets this fd: sealed, none of them can truncate the memory under the others
      // (SIGBUS) or seal it against later mappings (F_SEAL_FUTURE_WRITE). A named object cannot
      // be sealed; #repairMemory() guards that case as far as it can be guarded.
      if (this.shm.name === null) this.shm.seal();
      if (this.leftoverShm !== null) clearOldHeader(this.shm);
      if (this.header !== null) {
        const low = lowBuffer(this.shm);
        writeHeader(low, this.header);
        this.#pending = new BitWords(low, this.header.pendingOffset, this.header.words);
        this.#live = new BitWords(low, this.header.liveOffset, this.header.words);
        this.#leases = new LeaseWords(low, this.header);
      }
      listener = UnixSocket.listen(this.socketPath, { mode: options.mode, backlog: 10 });
      this.#acceptWatcher = listener.watch();
    } catch (error) {
      if (listener !== null) {
        listener.close();
        unlinkSync(this.socketPath);
      }
      // A reused leftover stays where it was found (grown, its old header cleared).
      this.#releaseShm(this.leftoverShm?.action !== 'reused');
      throw error;
    }
    this.#listener = listener;
    this.#spare = new SpareFd();
    this.maxQueued = Math.max(MAX_QUEUED, 2 * (3 + this.maxPeers * this.vectors));
    this.#acceptWatcher.on('readable', () => this.#acceptAll());
    this.#acceptWatcher.on('error', (error) => this.emit('warning', error));
    this.#acceptWatcher.start();
    if (this.#leases !== null && this.leaseTimeout > 0) {
      this.#leaseTimer = setInterval(() => this.#checkLeases(), LEASE_TICK_MS);
      this.#leaseTimer.unref();
    }
  }

  /** Creates the shared memory and starts listening; clients can connect once this returns. */
  static listen(options: PeerServerOptions = {}): PeerServer {
    const socketPath = options.socketPath ?? DEFAULT_SOCKET_PATH;
    check.string('socketPath', socketPath);
    const size = check.integer('size', options.size ?? DEFAULT_SIZE, 1, MAX_SERVER_SIZE);
    const vectors = check.integer('vectors', options.vectors ?? 1, 1, MAX_SERVER_VECTORS);
    const maxPeers = check.integer('maxPeers', options.maxPeers ?? DEFAULT_MAX_PEERS, 1, MAX_PEER_ID + 1);
    const mode = check.integer('mode', options.mode ?? 0o600, 0, 0o777);
    if (options.shmName !== undefined) check.string('shmName', options.shmName);
    const existingShm = options.existingShm ?? 'fail';
    if (existingShm !== 'fail' && existingShm !== 'reuse' && existingShm !== 'replace') {
      throw new TypeError(`existingShm must be 'fail', 'reuse' or 'replace', got ${JSON.stringify(existingShm)}`);
    }
    const bitmask = options.bitmask === undefined ? false : check.bool('bitmask', options.bitmask);
    const leaseTimeout = check.integer('leaseTimeout', options.leaseTimeout ?? DEFAULT_LEASE_TIMEOUT, 0, 2 ** 31 - 1);
    if (leaseTimeout !== 0 && leaseTimeout < LEASE_TICK_MS) throw new RangeError(`leaseTimeout must be 0 (leases off) or at least ${LEASE_TICK_MS} ms, got ${leaseTimeout}`);
    return new PeerServer({ socketPath, size, vectors, maxPeers, mode, shmName: options.shmName, existingShm, bitmask, leaseTimeout });
  }

  /** Where the application's bytes begin: after the header in bitmask mode, else 0. */
  get dataOffset(): number {
    return this.header?.dataOffset ?? 0;
  }

  /** The peers connected now, in connect order (not those whose lease is gone). */
  peers(): PeerInfo[] {
    return [...this.#clients.values()].filter((c) => !c.dormant).map((c) => ({ id: c.id, vectors: c.eventfds.length }));
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
    if (this.#acceptRetry !== null) clearTimeout(this.#acceptRetry);
    if (this.#leaseTimer !== null) clearInterval(this.#leaseTimer);
    this.#acceptWatcher.close();
    this.#listener.close();
    this.#spare.close();
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

  #releaseShm(unlink = true): void {
    if (this.shm === undefined) return;
    if (unlink && this.shm.name !== null) {
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
        this.#acceptFailed(error as Error);
        return;
      }
      if (socket === null) return;
      this.#admit(socket);
    }
  }

  /**
   * A failed accept leaves the connection queued and the listener readable: just returning
   * would spin. Out of fds, the spare slot lets each waiting client be accepted and closed at
   * once (it sees EOF); otherwise accepting pauses a while.
   */
  #acceptFailed(error: Error): void {
    const outOfFds = isOutOfFds(error);
    this.#troubleAdmitting(error, outOfFds ? OUT_OF_FDS : `retrying every ${ACCEPT_RETRY_MS} ms`);
    if (this.#closed) return;
    if (outOfFds && this.#spare.release()) {
      let refused = 0;
      let drained = false;
      try {
        for (let s = this.#listener.accept(); s !== null; s = this.#listener.accept()) {
          s.close();
          refused += 1;
        }
        drained = true;
      } catch {
        // the freed slot was taken meanwhile (by another thread): pause below
      }
      const held = this.#spare.restore();
      for (let i = 0; i < refused && !this.#closed; i++) this.emit('peer-refused', refusedForFds(error));
      if (drained && held) return;
    }
    this.#pauseAccepting();
  }

  /** Reports why clients cannot be taken in: once, until a peer joins again. */
  #troubleAdmitting(error: Error, consequence: string): void {
    if (this.#admitTrouble) return;
    this.#admitTrouble = true;
    error.message += `: ${consequence}`;
    this.emit('warning', error);
  }

  #pauseAccepting(): void {
    if (this.#closed || this.#acceptRetry !== null) return;
    this.#acceptWatcher.stop();
    this.#acceptRetry = setTimeout(() => {
      this.#acceptRetry = null;
      if (this.#closed) return;
      this.#spare.restore();
      this.#acceptWatcher.start();
    }, ACCEPT_RETRY_MS);
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
      for (const [id, c] of this.#clients) if (!c.dormant) this.#live!.set(id);
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
      socket.setSendBuffer(CLIENT_SEND_BUFFER);
      const watcher = socket.watch();
      client = new Client(id, socket, watcher);
    } catch (error) {
      for (const e of eventfds) e.close();
      socket.close();
      if (isOutOfFds(error)) {
        this.#troubleAdmitting(error, OUT_OF_FDS);
        if (!this.#closed) this.emit('peer-refused', refusedForFds(error));
      } else {
        this.emit('warning', error as Error);
      }
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
    this.#leases?.clear(id);
    this.#live?.set(id);
    const own = client.eventfds.map((e) => e.fd);
    const here = (): boolean => this.#clients.get(id) === client;
    // The connect sequence (docs/protocol.md): version, ID, shm first (QEMU blocks in realize until it has the shm), then the
    // newcomer's fds to everyone else, then everyone else's to it, then its own. A client can
    // vanish at any send (EPIPE): from then on there is nobody to greet or to announce.
    this.#send(client, greeting(id, this.shm.fd), null);
    if (!here()) return;
    client.announced = true;
    for (const other of this.#others(client)) {
      other.knows.add(id);
      this.#send(other, peerVectors(id, own), client);
    }
    for (const other of this.#others(client)) {
      if (!here()) return;
      if (other.dormant) continue; // still connected, but announced as gone
      client.knows.add(other.id);
      this.#send(client, peerVectors(other.id, other.eventfds.map((e) => e.fd)), other);
    }
    if (!here()) return;
    this.#send(client, peerVectors(id, own), client);
    if (!here()) return;
    this.#admitTrouble = false;
    this.emit('peer-joined', { id, vectors: this.vectors });
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

  /** Sends `messages` to `client`, or queues them; their fds are `owner`'s eventfds (null: the server's). */
  #send(client: Client, messages: readonly WireMessage<number>[], owner: Client | null = null): void {
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
      // The client is not reading right now: queue, up to a bound. The queue refers to fds the
      // server holds anyway (a copy for each would let clients that never read fill the fd table).
      if (client.queue.length >= this.maxQueued) {
        this.emit('warning', new Error(`peer ${client.id} is not reading and was dropped: ${this.maxQueued} messages are queued for it`));
        this.#drop(client, 'not-reading');
        return;
      }
      client.queue.push({ data, fd: message.fd ?? null, owner: message.fd === undefined ? null : owner, copy: false });
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
      if (head.copy) native.closeFd(head.fd!);
    }
    client.writableWatched = false;
    client.watcher.start({ readable: true });
  }

  /**
   * Before `leaver`'s eventfds are closed: takes them out of the others' queues. A client that
   * was sent none of them yet never hears of the leaver at all (neither its fds nor its leave);
   * one that was sent some gets private copies of the rest, then the leave.
   */
  #forget(leaver: Client): void {
    for (const other of this.#clients.values()) {
      if (!other.knows.has(leaver.id)) continue;
      const unsent = other.queue.filter((p) => p.owner === leaver);
      if (unsent.length === 0) continue;
      if (unsent.length === leaver.eventfds.length) {
        let kept = 0;
        for (const p of other.queue) if (p.owner !== leaver) other.queue[kept++] = p;
        other.queue.length = kept;
        other.knows.delete(leaver.id);
        continue;
      }
      try {
        for (const p of unsent) {
          p.fd = native.dupFd(p.fd!);
          p.owner = null;
          p.copy = true;
        }
      } catch (error) {
        // Out of fds: this client cannot be told the truth any more.
        this.emit('warning', withPeer(error, other.id));
        this.#drop(other, 'send-failed');
      }
    }
  }

  /** Every tick: a lease that stood still too long, or was cleared, is a leave; one renewed after that a join. */
  #checkLeases(): void {
    if (this.#closed || this.#leases === null || this.shm.closed) return;
    this.#repairMemory();
    const now = performance.now();
    for (const client of [...this.#clients.values()]) {
      if (this.#clients.get(client.id) !== client) continue; // dropped by an earlier step
      const lease = this.#leases.read(client.id);
      if (lease !== client.lease) {
        const released = lease === 0;
        client.lease = lease;
        client.leaseChangedAt = now;
        if (released && !client.dormant) this.#sleep(client, 'lease-released');
        else if (!released && client.dormant) this.#wake(client);
      } else if (lease !== 0 && !client.dormant && now - client.leaseChangedAt > this.leaseTimeout) {
        this.#sleep(client, 'lease-expired');
      }
    }
  }

  /** The program behind `client` is gone though its connection (QEMU) stays: the others hear it left. */
  #sleep(client: Client, reason: LeaveReason): void {
    client.dormant = true;
    this.#forget(client);
    this.#live?.clear(client.id);
    this.#pending?.clear(client.id);
    for (const other of [...this.#clients.values()]) {
      if (other !== client && other.knows.delete(client.id)) this.#send(other, [leave(client.id)]);
    }
    this.emit('peer-left', { id: client.id, vectors: client.eventfds.length }, reason);
  }

  /** A dormant client's lease moves again: a fresh start (no pending bit), announced as a join. */
  #wake(client: Client): void {
    client.dormant = false;
    this.#pending?.clear(client.id);
    this.#live?.set(client.id);
    const own = client.eventfds.map((e) => e.fd);
    for (const other of this.#others(client)) {
      other.knows.add(client.id);
      this.#send(other, peerVectors(client.id, own), client);
    }
    if (this.#clients.get(client.id) === client) this.emit('peer-joined', { id: client.id, vectors: client.eventfds.length });
  }

  #drop(client: Client, reason: LeaveReason, notify = true): void {
    if (this.#clients.get(client.id) !== client) return;
    this.#clients.delete(client.id);
    client.watcher.close();
    client.socket.close();
    for (const pending of client.queue) if (pending.copy) native.closeFd(pending.fd!);
    client.queue.length = 0;
    const info = { id: client.id, vectors: client.eventfds.length };
    if (notify) this.#forget(client);
    for (const e of client.eventfds) e.close();
    // Not live any more, and a bit it left set must not suppress rings to a future holder of the ID.
    if (!this.shm.closed) {
      this.#repairMemory();
      this.#live?.clear(client.id);
      this.#pending?.clear(client.id);
      this.#leases?.clear(client.id);
    }
    // Never greeted, or announced as gone already (its lease): nobody is to hear of it again.
    if (!client.announced || client.dormant) return;
    if (notify) {
      for (const other of [...this.#clients.values()]) {
        // A newcomer that has not been sent the leaver's fds yet never hears of it at all.
        if (other.knows.delete(client.id)) this.#send(other, [leave(client.id)]);
      }
    }
    this.emit('peer-left', info, reason);
  }
}

const OUT_OF_FDS = 'the server is out of file descriptors: new clients are refused until some are free';

/** EMFILE (this process's fd table is full) or ENFILE (the system's is). */
function isOutOfFds(error: unknown): error is Error & NodeJS.ErrnoException {
  return isSystemError(error) && (error.code === 'EMFILE' || error.code === 'ENFILE');
}

function refusedForFds(error: unknown): string {
  return `the server is out of file descriptors (${(error as NodeJS.ErrnoException).code})`;
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

/** A leftover we may take over: lstat of /dev/shm/NAME (where glibc and musl keep POSIX shm). */
function leftoverStat(name: string): Stats | null {
  try {
    return lstatSync(`/dev/shm${name}`);
  } catch (error) {
    if (isSystemError(error) && error.code === 'ENOENT') return null;
    throw error;
  }
}

/** Why a leftover is not reused, or null if it may be: ours alone, and a regular object. */
function unreusable(name: string, st: Stats): string | null {
  if (st.isSymbolicLink()) return `/dev/shm${name} is a symbolic link, not a shared memory object`;
  if (!st.isFile()) return `/dev/shm${name} is not a shared memory object (not a regular file)`;
  const uid = process.geteuid?.() ?? st.uid;
  if (st.uid !== uid) {
    return `it belongs to uid ${st.uid}, not to this user (uid ${uid}): its owner can read and change all it holds`;
  }
  if ((st.mode & 0o077) !== 0) {
    return `its mode ${(st.mode & 0o777).toString(8).padStart(3, '0')} lets group or others open it (a server makes it 600): someone else may hold it`;
  }
  return null;
}

/**
 * The named object for a server of `size` bytes: created (O_EXCL), or, when one exists already
 * (the caller has checked that no live server answers on its socket), dealt with by `policy`.
 * A refusal is shm_open's EEXIST error, its message telling why the object is not taken.
 */
function createNamedShm(
  shmName: string,
  size: number,
  policy: ExistingShmPolicy,
): { shm: SharedMemory; leftover: LeftoverShm | null } {
  const name = normalizeShmName(shmName);
  const replaceHint = "remove it (SharedMemory.unlink, rm /dev/shm/NAME), or replace it (existingShm: 'replace'; ivshmem server --force)";
  // Twice at most: a leftover that vanishes between the two looks (removed by hand) is no leftover.
  for (let attempt = 0; ; attempt++) {
    let exists: Error;
    try {
      return { shm: SharedMemory.create({ name, size }), leftover: null };
    } catch (error) {
      if (!isSystemError(error) || error.code !== 'EEXIST') throw error;
      exists = error;
    }
    const refuse = (why: string): Error => {
      exists.message += `: ${why}`;
      return exists;
    };
    if (policy === 'fail') {
      throw refuse(`the shared memory object ${name} exists already (left by a server that died?); remove it (SharedMemory.unlink), or pass existingShm: 'reuse' or 'replace'`);
    }
    const st = leftoverStat(name);
    if (st === null) {
      if (attempt === 0) continue;
      throw refuse(`the shared memory object ${name} keeps appearing and vanishing: another program is using that name`);
    }
    const foundSize = st.size;
    if (policy === 'replace') {
      if (!st.isFile() && !st.isSymbolicLink()) throw refuse(`/dev/shm${name} is not a shared memory object (not a regular file): not replaced`);
      try {
        SharedMemory.unlink(name);
      } catch (error) {
        if (!isSystemError(error) || error.code !== 'ENOENT') {
          (error as Error).message = `cannot remove the existing shared memory object ${name} to replace it: ${(error as Error).message}`;
          throw error;
        }
      }
      return { shm: SharedMemory.create({ name, size }), leftover: { name, action: 'replaced', foundSize, wantedSize: size } };
    }
    const what = `the existing shared memory object ${name} (${foundSize} bytes)`;
    const refusal = unreusable(name, st);
    if (refusal !== null) throw refuse(`${what} is not reused: ${refusal}; ${replaceHint}`);
    // Never shrunk: whoever still maps it (a VM of the dead server) would die of SIGBUS.
    const served = roundUpToPowerOfTwo(Math.max(size, foundSize));
    if (served > MAX_SERVER_SIZE) {
      throw refuse(`${what} is not reused: it is larger than the ${MAX_SERVER_SIZE} bytes a server serves; ${replaceHint}`);
    }
    let shm: SharedMemory;
    try {
      shm = SharedMemory.create({ name, size: served, exclusive: false });
    } catch (error) {
      (error as Error).message = `cannot reuse ${what}: ${(error as Error).message}`;
      throw error;
    }
    return { shm, leftover: { name, action: 'reused', foundSize, wantedSize: size } };
  }
}

/**
 * A taken-over object that starts with a bitmask header (magic at byte 0): zeroes it, from
 * byte 0 to its dataOffset (only the magic if that offset is impossible), so that no peer
 * reads an old server's pending, live or lease bits, nor a header a server without --bitmask
 * does not keep. Everything after it keeps its contents.
 */
function clearOldHeader(shm: SharedMemory): void {
  if (shm.size < 64) return;
  const view = new DataView(lowBuffer(shm));
  if (view.getBigUint64(HeaderField.magic, true) !== HEADER_MAGIC) return;
  const old = view.getUint32(HeaderField.dataOffset, true);
  const end = old >= 8 && old <= view.byteLength && old % 4096 === 0 ? old : 8;
  new Uint8Array(view.buffer, 0, end).fill(0);
}
