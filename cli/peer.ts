/**
 * `ivshmem peer`: an interactive ivshmem peer, like QEMU's ivshmem-client. It connects, prints
 * its ID and the peers it knows, then reports interrupts, joins and leaves while it reads
 * commands from stdin, one per line (cli/session.ts, shared with `ivshmem guest peer`). With
 * --json every event and every result is one JSON object per line on stdout, for programs (and
 * tests) to drive it.
 */
import { type Command, Option } from 'commander';
import { isRefusedError } from '../lib/core/errors.js';
import { DEFAULT_SOCKET_PATH } from '../lib/network/server.js';
import { DEFAULT_MAX_VECTORS } from '../lib/protocol/wire.js';
import { DEFAULT_MAX_SIZE, Peer } from '../lib/network/peer.js';
import { formatSize, sizeArg } from './size.js';
import { integerArg, messageOf, printError, subcommand } from './common.js';
import { COMMANDS_HELP, runSession } from './session.js';

interface PeerFlags {
  socket: string;
  json?: boolean;
  vectors?: number;
  timeout: number;
  maxSize: number;
  retry?: boolean;
}

/** How often --retry tries again, as QEMU's ivshmem-client does. */
const RETRY_MS = 1000;

export function addPeerCommand(program: Command): Command {
  return subcommand(program, 'peer')
    .description('connect to an ivshmem server as a peer and ring, read and write from stdin commands')
    .addOption(new Option('-S, --socket <path>', "the server's UNIX socket").default(DEFAULT_SOCKET_PATH))
    .addOption(new Option('--json', 'print every event and result as one JSON object per line'))
    .addOption(
      new Option(
        '--vectors <n>',
        'own vectors to wait for while connecting (default: as many as the other peers have, or those sent before 50 ms of quiet)',
      ).argParser(integerArg(1, DEFAULT_MAX_VECTORS)),
    )
    .addOption(
      new Option('--timeout <ms>', 'give up connecting after this many milliseconds')
        .argParser(integerArg(1, 2 ** 31 - 1))
        .default(5000),
    )
    .addOption(
      new Option('--retry', 'while no server listens (or it refuses), try again every second until connected'),
    )
    .addOption(
      new Option('--max-size <size>', 'refuse shared memory larger than this from the server (K, M, G, T suffixes)')
        .argParser(sizeArg(1, 2 ** 47))
        .default(DEFAULT_MAX_SIZE, formatSize(DEFAULT_MAX_SIZE)),
    )
    .addHelpText(
      'after',
      `
${COMMANDS_HELP}

Text output: "connected: id 3, 2 vectors, 4194304 bytes shared", "peers: 0(2) 1(2)",
"interrupt on vector 1", "peer 4 joined", "peer 4 left", "server lost", hex dump lines
("00000040  de ad be ef ..."), "error: ...", and for dump a table:
     ID  VECTORS
      3        2  (us)
      0        2
On a terminal (without --json) it prompts "cmd> ", with line editing and history.

JSON output (--json), one object per line:
  {"event":"connected","id":3,"vectors":2,"size":4194304,"peers":[{"id":0,"vectors":2}]}
  {"event":"interrupt","vector":1,"count":1}    {"event":"peer-joined","id":4}
  {"event":"peer-left","id":4}    {"event":"server-lost"}
  {"event":"rang","peer":4,"vector":0}    {"event":"peers","peers":[...]}
  {"event":"dump","id":3,"vectors":2,"peers":[{"id":0,"vectors":2}]}
  {"event":"read","offset":64,"hex":"deadbeef"}    {"event":"written","offset":64,"length":4}
  {"event":"error","message":"..."}

An invalid command is reported and the peer keeps running. If the server goes away the peer
keeps its known peers and shared memory (as QEMU does): ring, read and write still work.
quit, end of input, SIGINT and SIGTERM leave with status 0; a failed connect exits with 1.
With --retry a connect that finds no server (ENOENT, ECONNREFUSED) or is refused is tried
again every second until it succeeds or a signal comes, with one note on stderr per reason
("waiting for the server at PATH (ENOENT)…"); --timeout then bounds each attempt.`,
    )
    .action((flags: PeerFlags) => runPeer(flags));
}

async function runPeer(flags: PeerFlags): Promise<void> {
  const connect = (): Promise<Peer> =>
    Peer.connect(flags.socket, {
      timeout: flags.timeout,
      maxSize: flags.maxSize,
      ...(flags.vectors === undefined ? {} : { vectors: flags.vectors }),
    });
  await runSession({
    json: flags.json === true,
    open: flags.retry === true ? () => connectRetrying(flags.socket, connect) : connect,
    failure: (error) => `cannot connect to ${flags.socket}: ${messageOf(error)}`,
    // Only a Peer has a server to lose.
    attach: (peer, session) =>
      peer.on('server-lost', (error) =>
        session.report(
          error === null ? { event: 'server-lost' } : { event: 'server-lost', message: error.message },
          error === null ? 'server lost' : `server lost: ${error.message}`,
        ),
      ),
  });
}

/**
 * Connects, trying again every RETRY_MS while there is no server to connect to (ENOENT,
 * ECONNREFUSED) or it refuses; any other failure is final. Each reason for waiting is noted
 * once on stderr, not once a second. Ends with the process (runSession's signal handlers).
 */
async function connectRetrying(socket: string, connect: () => Promise<Peer>): Promise<Peer> {
  let reason: string | null = null;
  for (;;) {
    try {
      return await connect();
    } catch (error) {
      const now = retryReason(error);
      if (now === null) throw error;
      if (now !== reason) printError(`waiting for the server at ${socket} (${now})…`);
      reason = now;
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

/** Why a failed connect is worth trying again, or null if it is not. */
function retryReason(error: unknown): string | null {
  if (isRefusedError(error)) return `refused: ${error.message}`;
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ECONNREFUSED' ? code : null;
}
