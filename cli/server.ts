/**
 * `ivshmem server`: QEMU's ivshmem-server with the same flags, run in the foreground.
 *
 * stdout carries one line per event, for people and for scripts: first `listening on PATH`
 * (once clients can connect), then `peer N joined` and `peer N left (REASON)`. Everything
 * else (size rounding, a reused leftover shm, and with -v refused peers, warnings and the
 * configuration) goes to stderr. With --json stdout is one JSON object per event instead
 * (`listening`, `peer-joined`, `peer-left`, `peer-refused`, `warning`, `closed`, or `error`).
 */
import { unlinkSync, writeFileSync } from 'node:fs';
import { type Command, InvalidArgumentError, Option } from 'commander';
import {
  DEFAULT_LEASE_TIMEOUT,
  DEFAULT_MAX_PEERS,
  DEFAULT_SIZE,
  DEFAULT_SOCKET_PATH,
  type LeftoverShm,
  MAX_SERVER_SIZE,
  MAX_SERVER_VECTORS,
  PeerServer,
} from '../lib/network/server.js';
import { normalizeShmName } from '../lib/sys/shared-memory.js';
import { MAX_PEER_ID } from '../lib/protocol/wire.js';
import {
  CliError,
  ignoreClosedOutput,
  integerArg,
  messageOf,
  octalModeArg,
  printError,
  printLine,
  subcommand,
} from './common.js';
import { formatSize, sizeArg } from './size.js';

interface ServerFlags {
  socket: string;
  shm?: string;
  size: number;
  vectors: number;
  maxPeers: number;
  mode: number;
  pidFile?: string;
  bitmask?: boolean;
  leaseTimeout: number;
  foreground?: boolean;
  verbose?: boolean;
  json?: boolean;
  force?: boolean;
}

function shmNameArg(value: string): string {
  try {
    normalizeShmName(value);
  } catch (error) {
    const message = messageOf(error);
    throw new InvalidArgumentError(`${message.charAt(0).toUpperCase()}${message.slice(1)}.`);
  }
  return value;
}

function unsupportedShmDir(): never {
  throw new InvalidArgumentError(
    'File-backed shared memory in a directory is not supported: use -M NAME for a POSIX shm object (/dev/shm/NAME), or neither for an anonymous memfd.',
  );
}

export function addServerCommand(program: Command): Command {
  return subcommand(program, 'server')
    .description("run an ivshmem server (QEMU's ivshmem-server protocol and flags) in the foreground")
    .addOption(new Option('-S, --socket <path>', 'UNIX socket to listen on').default(DEFAULT_SOCKET_PATH))
    .addOption(
      new Option(
        '-M, --shm <name>',
        'name of a POSIX shared-memory object to create (/dev/shm/NAME, removed on exit; one left by a server that died is reused); without it, an anonymous memfd',
      ).argParser(shmNameArg),
    )
    .addOption(
      new Option(
        '-m, --shm-dir <dir>',
        "QEMU's file-backed memory in a directory: not supported (use -M, or nothing for a memfd)",
      ).argParser(unsupportedShmDir),
    )
    .addOption(
      new Option(
        '-l, --size <size>',
        'shared-memory size in bytes; K, M, G suffixes are binary (1K = 1024); rounded up to a power of two (at least 4K), as QEMU requires',
      )
        .argParser(sizeArg(1, MAX_SERVER_SIZE))
        .default(DEFAULT_SIZE, formatSize(DEFAULT_SIZE)),
    )
    .addOption(
      new Option('-n, --vectors <n>', `interrupt vectors per peer, 1 to ${MAX_SERVER_VECTORS}`)
        .argParser(integerArg(1, MAX_SERVER_VECTORS))
        .default(1),
    )
    .addOption(
      new Option('--max-peers <n>', 'peers served at once; a client beyond that is disconnected at once')
        .argParser(integerArg(1, MAX_PEER_ID + 1))
        .default(DEFAULT_MAX_PEERS),
    )
    .addOption(
      new Option('--mode <octal>', 'permission bits of the socket file').argParser(octalModeArg).default(0o600, '600'),
    )
    .addOption(
      new Option(
        '--bitmask',
        'lay out the bitmask header (docs/header.md) for BitmaskDoorbell and channel peers; peer IDs then stay below --max-peers rounded up to 64',
      ),
    )
    .addOption(
      new Option(
        '--lease-timeout <ms>',
        'with --bitmask: a peer whose lease (a program inside a VM) stands still this long is announced as gone, and as back when it renews it; 0: leases off',
      )
        .argParser(integerArg(0, 2 ** 31 - 1))
        .default(DEFAULT_LEASE_TIMEOUT),
    )
    .addOption(new Option('-p, --pid-file <path>', 'write the process ID to this file once listening; removed on exit'))
    .addOption(
      new Option('-F, --foreground', 'accepted for compatibility with QEMU: this server always runs in the foreground'),
    )
    .addOption(
      new Option(
        '--force',
        'with -M: replace a leftover /dev/shm/NAME by a new, zeroed object of the requested size instead of reusing it (never one a live server on the socket uses)',
      ),
    )
    .addOption(new Option('--json', 'print every event as one JSON object per line on stdout (refused peers and warnings too)'))
    .addOption(new Option('-v, --verbose', 'also report refused peers, warnings and the configuration on stderr'))
    .addHelpText(
      'after',
      `
Output:
  stdout: "listening on PATH" once clients can connect, then "peer N joined" and
  "peer N left (REASON)" per event, REASON being disconnected, send-failed,
  not-reading (it left too much unread), lease-expired or lease-released (the program of a
  VM's device is gone: its VM stays connected, and "peer N joined" comes again when a program
  renews its lease) or server-closed. stderr: a note when the size
  was rounded up or a leftover named object taken over (below), and with -v refused peers (the maximum reached, or the server out of
  file descriptors) and warnings (out of file descriptors: once, until a peer joins again).

JSON output (--json), one object per line on stdout (stderr as above):
  {"event":"listening","socket":"/tmp/ivshmem_socket","size":4194304,"vectors":1,
   "maxPeers":64,"bitmask":false,"shm":null,"dataOffset":0}    (shm: "/NAME" with -M)
  {"event":"peer-joined","id":0,"vectors":1}
  {"event":"peer-left","id":0,"vectors":1,"reason":"disconnected"}
  {"event":"peer-refused","reason":"..."}    {"event":"warning","message":"..."}
  {"event":"closed"} (on SIGINT or SIGTERM, last)    {"event":"error","message":"..."}
  (could not start: exit status 1)

Named memory left behind: -M NAME when /dev/shm/NAME exists and no live server answers on
the socket (the socket is absent or stale: its server died) reuses the object, as QEMU's
server does, with a note on stderr: its contents stay, it grows to the size if smaller and
is never shrunk (a larger one is kept at its size, rounded up to a power of two), and any old
bitmask header in it is cleared (and written afresh with --bitmask). An object of another
user, or one group or others can open, is not reused. --force removes it and creates a new
one instead. A live server's socket is refused before its memory is touched.

SIGINT or SIGTERM closes the server: the socket file, the named shm and the pid file are
removed and the exit status is 0. Exit status 1: the server could not start (the socket is
in use by a live server, the shm name cannot be used, ...); 2: invalid command line.

Defaults against QEMU's ivshmem-server (contrib/ivshmem-server):
  socket      /tmp/ivshmem_socket, as QEMU's (mode 600 here; QEMU's follows the umask)
  size        4M, as QEMU's; both round up to a power of two
  vectors     1, as QEMU's; at most 64 in both
  memory      an anonymous memfd, sealed, that only peers hold; QEMU's default is the named
              object "ivshmem" (-M ivshmem here). -M NAME: both create /dev/shm/NAME and
              remove it on exit; an existing one QEMU's always reuses (a live server's too)
              and truncates to the size, this one as above. QEMU's -m DIR (a file in a
              directory) is not supported
  max peers   64 (--max-peers, up to 65536); QEMU's has no limit but its 65536 IDs and
              select()'s 1024 file descriptors
  foreground  always; QEMU's daemonizes without -F

Example, with QEMU as a peer:
  ivshmem server -S /tmp/ivshmem.sock -l 1M -n 2
  qemu-system-x86_64 ... -chardev socket,id=ch0,path=/tmp/ivshmem.sock \\
    -device ivshmem-doorbell,chardev=ch0,vectors=2`,
    )
    .action((flags: ServerFlags) => runServer(flags));
}

/** One line of --json output. */
function printEvent(event: Record<string, unknown>): void {
  printLine(JSON.stringify(event));
}

/** The stderr note on a leftover named object the server took over. */
function leftoverNote(leftover: LeftoverShm, size: number): string {
  const what = `the shared memory object ${leftover.name} left by an earlier server (${leftover.foundSize} bytes)`;
  if (leftover.action === 'replaced') return `replaced ${what} by a new one of ${size} bytes (--force)`;
  let note = `reusing ${what}`;
  if (leftover.foundSize < size) note += `, grown to ${size} bytes`;
  if (size > leftover.wantedSize) {
    note += `; kept at ${size} bytes, more than the ${leftover.wantedSize} asked for (it is never shrunk: --force replaces it by a new one)`;
  }
  return note;
}

function runServer(flags: ServerFlags): void {
  ignoreClosedOutput();
  const json = flags.json === true;
  const pidFile = flags.pidFile;
  let server: PeerServer | null = null;
  // Handlers go in before the socket exists: a signal that arrived before them would kill the
  // process outright and leave the socket file behind.
  const shutdown = (): void => {
    process.off('SIGINT', shutdown);
    process.off('SIGTERM', shutdown);
    // Closes every fd and removes the socket file and the named shm; announces the departures.
    server?.close();
    if (pidFile !== undefined) {
      try {
        unlinkSync(pidFile);
      } catch {
        // not written yet, or removed by someone else
      }
    }
    if (json && server !== null) printEvent({ event: 'closed' });
    // Nothing is left to keep the event loop alive: the process ends with status 0.
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);

  try {
    server = PeerServer.listen({
      socketPath: flags.socket,
      ...(flags.shm === undefined ? {} : { shmName: flags.shm, existingShm: flags.force === true ? 'replace' : 'reuse' }),
      size: flags.size,
      vectors: flags.vectors,
      maxPeers: flags.maxPeers,
      mode: flags.mode,
      bitmask: flags.bitmask === true,
      leaseTimeout: flags.leaseTimeout,
    });
    if (pidFile !== undefined) {
      try {
        writeFileSync(pidFile, `${process.pid}\n`);
      } catch (error) {
        throw new Error(`cannot write the pid file: ${messageOf(error)}`);
      }
    }
  } catch (error) {
    server?.close();
    process.off('SIGINT', shutdown);
    process.off('SIGTERM', shutdown);
    const message = messageOf(error);
    if (json) printEvent({ event: 'error', message });
    throw new CliError(message);
  }

  if (json) {
    server.on('peer-joined', (peer) => printEvent({ event: 'peer-joined', id: peer.id, vectors: peer.vectors }));
    server.on('peer-left', (peer, reason) => printEvent({ event: 'peer-left', id: peer.id, vectors: peer.vectors, reason }));
    server.on('peer-refused', (reason) => printEvent({ event: 'peer-refused', reason }));
    server.on('warning', (error) => printEvent({ event: 'warning', message: error.message }));
  } else {
    server.on('peer-joined', (peer) => printLine(`peer ${peer.id} joined`));
    server.on('peer-left', (peer, reason) => printLine(`peer ${peer.id} left (${reason})`));
    server.on('peer-refused', (reason) => {
      if (flags.verbose === true) printError(`refused a peer: ${reason}`);
    });
    server.on('warning', (error) => {
      if (flags.verbose === true) printError(`warning: ${error.message}`);
    });
  }

  // Clients can connect from here on; this line comes before any other output.
  if (json) {
    printEvent({
      event: 'listening',
      socket: server.socketPath,
      size: server.size,
      vectors: server.vectors,
      maxPeers: server.maxPeers,
      bitmask: server.header !== null,
      shm: server.shm.name,
      dataOffset: server.dataOffset,
    });
  } else {
    printLine(`listening on ${server.socketPath}`);
  }
  // The size this server would have made, before a larger leftover was kept.
  const made = server.leftoverShm?.wantedSize ?? server.size;
  if (made !== server.requestedSize) {
    printError(
      `size ${server.requestedSize} rounded up to ${made} (${formatSize(made)}): QEMU requires a power of two${server.requestedSize < 4096 ? ', and the smallest size served is 4K' : ''}`,
    );
  }
  if (server.leftoverShm !== null) printError(leftoverNote(server.leftoverShm, server.size));
  if (flags.verbose === true) {
    const shm = server.shm.name === null ? 'anonymous memfd' : `POSIX shm ${server.shm.name}`;
    printError(
      `shared memory: ${shm}, ${server.size} bytes; ${server.vectors} vector(s) per peer; at most ${server.maxPeers} peers; socket mode ${flags.mode.toString(8).padStart(3, '0')}${server.header === null ? '' : `; bitmask header, data from byte ${server.dataOffset}`}`,
    );
  }
}
