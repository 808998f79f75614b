/**
 * `ivshmem peer`: an interactive ivshmem peer, like QEMU's ivshmem-client. It connects, prints
 * its ID and the peers it knows, then reports interrupts, joins and leaves while it reads
 * commands from stdin, one per line (see COMMANDS). With --json every event and every result
 * is one JSON object per line on stdout, for programs (and tests) to drive it.
 */
import { createInterface, type Interface } from 'node:readline';
import { type Command, Option } from 'commander';
import { DEFAULT_SOCKET_PATH } from '../lib/network/server.js';
import { DEFAULT_MAX_VECTORS } from '../lib/protocol/wire.js';
import { DEFAULT_MAX_SIZE, Peer } from '../lib/network/peer.js';
import { formatSize, sizeArg } from './size.js';
import { CliError, ignoreClosedOutput, integerArg, messageOf, parseUnsigned, printLine, subcommand } from './common.js';

const COMMANDS = [
  'ring PEER [VECTOR]   ring PEER on VECTOR (default 0); your own ID rings yourself',
  'ring all [VECTOR]    ring every other known peer',
  'peers                list the other known peers as ID(VECTORS)',
  'read OFFSET LENGTH   hex dump of shared memory',
  'write OFFSET HEX     write bytes given as hex digits (e.g. deadbeef) into shared memory',
  'help                 this list',
  'quit, exit           leave (as does end of input)',
] as const;

interface PeerFlags {
  socket: string;
  json?: boolean;
  vectors?: number;
  timeout: number;
  maxSize: number;
}

type Event = { event: string } & Record<string, unknown>;

export function addPeerCommand(program: Command): Command {
  return subcommand(program, 'peer')
    .description('connect to an ivshmem server as a peer and ring, read and write from stdin commands')
    .addOption(new Option('-S, --socket <path>', "the server's UNIX socket").default(DEFAULT_SOCKET_PATH))
    .addOption(new Option('--json', 'print every event and result as one JSON object per line'))
    .addOption(
      new Option(
        '--vectors <n>',
        'own vectors to wait for while connecting (default: whatever the server sends at once)',
      ).argParser(integerArg(1, DEFAULT_MAX_VECTORS)),
    )
    .addOption(
      new Option('--timeout <ms>', 'give up connecting after this many milliseconds')
        .argParser(integerArg(1, 2 ** 31 - 1))
        .default(5000),
    )
    .addOption(
      new Option('--max-size <size>', 'refuse shared memory larger than this from the server (K, M, G, T suffixes)')
        .argParser(sizeArg(1, 2 ** 47))
        .default(DEFAULT_MAX_SIZE, formatSize(DEFAULT_MAX_SIZE)),
    )
    .addHelpText(
      'after',
      `
Commands (stdin, one per line; numbers are decimal or 0x hex):
${COMMANDS.map((c) => `  ${c}`).join('\n')}

Text output: "connected: id 3, 2 vectors, 4194304 bytes shared", "peers: 0(2) 1(2)",
"interrupt on vector 1", "peer 4 joined", "peer 4 left", "server lost", hex dump lines
("00000040  de ad be ef ..."), "error: ...".

JSON output (--json), one object per line:
  {"event":"connected","id":3,"vectors":2,"size":4194304,"peers":[{"id":0,"vectors":2}]}
  {"event":"interrupt","vector":1,"count":1}    {"event":"peer-joined","id":4}
  {"event":"peer-left","id":4}    {"event":"server-lost"}
  {"event":"rang","peer":4,"vector":0}    {"event":"peers","peers":[...]}
  {"event":"read","offset":64,"hex":"deadbeef"}    {"event":"written","offset":64,"length":4}
  {"event":"error","message":"..."}

An invalid command is reported and the peer keeps running. If the server goes away the peer
keeps its known peers and shared memory (as QEMU does): ring, read and write still work.
quit, end of input, SIGINT and SIGTERM leave with status 0; a failed connect exits with 1.`,
    )
    .action((flags: PeerFlags) => runPeer(flags));
}

async function runPeer(flags: PeerFlags): Promise<void> {
  ignoreClosedOutput();
  const json = flags.json === true;
  // Handlers go in first: a signal that arrives before them would kill the process outright.
  let session: Session | null = null;
  const onSignal = (): void => {
    // While connecting there is nothing to tidy up yet (the socket goes with the process).
    if (session === null) process.exit(0);
    session.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const removeHandlers = (): void => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };

  let peer: Peer;
  try {
    peer = await Peer.connect(flags.socket, {
      timeout: flags.timeout,
      maxSize: flags.maxSize,
      ...(flags.vectors === undefined ? {} : { vectors: flags.vectors }),
    });
  } catch (error) {
    removeHandlers();
    const message = `cannot connect to ${flags.socket}: ${messageOf(error)}`;
    if (json) printLine(JSON.stringify({ event: 'error', message }));
    throw new CliError(message);
  }
  session = new Session(peer, json, removeHandlers);
  session.start();
}

class Session {
  readonly #peer: Peer;
  readonly #json: boolean;
  readonly #onStop: () => void;
  #done = false;
  #input: Interface | null = null;

  constructor(peer: Peer, json: boolean, onStop: () => void) {
    this.#peer = peer;
    this.#json = json;
    this.#onStop = onStop;
  }

  start(): void {
    const peer = this.#peer;
    peer.on('interrupt', (vector, count) =>
      this.#report(
        { event: 'interrupt', vector, count },
        count === 1 ? `interrupt on vector ${vector}` : `interrupt on vector ${vector} (${count} coalesced)`,
      ),
    );
    peer.on('peer-joined', (id) => this.#report({ event: 'peer-joined', id }, `peer ${id} joined`));
    peer.on('peer-left', (id) => this.#report({ event: 'peer-left', id }, `peer ${id} left`));
    peer.on('server-lost', (error) =>
      this.#report(
        error === null ? { event: 'server-lost' } : { event: 'server-lost', message: error.message },
        error === null ? 'server lost' : `server lost: ${error.message}`,
      ),
    );
    const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
    this.#input = input;
    input.on('line', (line) => {
      if (!this.#done) this.#command(line);
    });
    input.on('close', () => this.stop());
    // Last: whoever reads this line may act on it at once (send a signal, write a command).
    this.#report(
      { event: 'connected', id: peer.id, vectors: peer.vectors, size: peer.shm.size, peers: peer.peers() },
      [
        `connected: id ${peer.id}, ${plural(peer.vectors, 'vector')}, ${peer.shm.size} bytes shared`,
        peersLine(peer.peers()),
      ],
    );
  }

  /** Leaves: closes the peer and stops reading stdin, so that the process ends with status 0. */
  stop(): void {
    if (this.#done) return;
    this.#done = true;
    this.#onStop();
    this.#peer.close();
    this.#input?.close();
    process.stdin.destroy();
  }

  #command(line: string): void {
    const words = line.trim().split(/\s+/).filter((w) => w !== '');
    const [name, ...args] = words;
    if (name === undefined || name.startsWith('#')) return;
    try {
      switch (name) {
        case 'ring':
          return this.#ring(args);
        case 'peers':
          expectArgs(args, 0, 'peers');
          return this.#report({ event: 'peers', peers: this.#peer.peers() }, peersLine(this.#peer.peers()));
        case 'read':
          return this.#read(args);
        case 'write':
          return this.#write(args);
        case 'help':
          return this.#report({ event: 'help', commands: [...COMMANDS] }, [...COMMANDS]);
        case 'quit':
        case 'exit':
          return this.stop();
        default:
          throw new UsageError(`unknown command ${JSON.stringify(name)}; try: ring, peers, read, write, help, quit`);
      }
    } catch (error) {
      this.#error(messageOf(error));
    }
  }

  #ring(args: string[]): void {
    const usage = 'usage: ring PEER|all [VECTOR]';
    if (args.length < 1 || args.length > 2) throw new UsageError(usage);
    const vector = args[1] === undefined ? 0 : number(args[1], 'vector');
    if (args[0] === 'all') {
      const targets = this.#peer.peers();
      if (targets.length === 0) throw new UsageError('no other peers to ring');
      for (const { id } of targets) {
        // One failure (a peer without that vector) does not stop the others being rung.
        try {
          this.#ringOne(id, vector);
        } catch (error) {
          this.#error(messageOf(error));
        }
      }
      return;
    }
    this.#ringOne(number(args[0]!, 'peer'), vector);
  }

  #ringOne(id: number, vector: number): void {
    this.#peer.ring(id, vector);
    this.#report({ event: 'rang', peer: id, vector }, `rang peer ${id} on vector ${vector}`);
  }

  #read(args: string[]): void {
    expectArgs(args, 2, 'read OFFSET LENGTH');
    const offset = number(args[0]!, 'offset');
    const length = number(args[1]!, 'length');
    if (length === 0) throw new UsageError('length must be at least 1');
    const bytes = this.#range(offset, length, 'read').slice();
    this.#report({ event: 'read', offset, hex: Buffer.from(bytes).toString('hex') }, hexdump(offset, bytes));
  }

  #write(args: string[]): void {
    expectArgs(args, 2, 'write OFFSET HEX');
    const offset = number(args[0]!, 'offset');
    const hex = args[1]!.replace(/^0x/i, '');
    if (hex.length === 0 || hex.length % 2 !== 0 || !/^[0-9a-f]+$/i.test(hex)) {
      throw new UsageError(`invalid data ${JSON.stringify(args[1])}: expected an even number of hex digits, e.g. deadbeef`);
    }
    const data = Buffer.from(hex, 'hex');
    this.#range(offset, data.length, 'write').set(data);
    this.#report(
      { event: 'written', offset, length: data.length },
      `wrote ${plural(data.length, 'byte')} at 0x${offset.toString(16)}`,
    );
  }

  /** The shared memory in [offset, offset + length), or a clear error if that is outside it. */
  #range(offset: number, length: number, what: string): Uint8Array {
    const size = this.#peer.shm.size;
    if (offset > size || length > size - offset) {
      throw new UsageError(
        `${what} of ${plural(length, 'byte')} at 0x${offset.toString(16)} is outside the shared memory (${size} bytes)`,
      );
    }
    return this.#peer.shm.bytes(offset, length);
  }

  #error(message: string): void {
    this.#report({ event: 'error', message }, `error: ${message}`);
  }

  #report(event: Event, text: string | string[]): void {
    if (this.#json) {
      printLine(JSON.stringify(event));
      return;
    }
    for (const line of typeof text === 'string' ? [text] : text) printLine(line);
  }
}

class UsageError extends Error {}

function expectArgs(args: string[], count: number, usage: string): void {
  if (args.length !== count) throw new UsageError(`usage: ${usage}`);
}

function number(text: string, what: string): number {
  const n = parseUnsigned(text);
  if (n === null) throw new UsageError(`invalid ${what} ${JSON.stringify(text)}: expected a number (decimal or 0x hex)`);
  return n;
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function peersLine(peers: readonly { id: number; vectors: number }[]): string {
  return `peers: ${peers.length === 0 ? '(none)' : peers.map((p) => `${p.id}(${p.vectors})`).join(' ')}`;
}

/** `hexdump -C` lines, addressed from `offset`: `00000040  de ad be ef ...  |....|`. */
export function hexdump(offset: number, bytes: Uint8Array): string[] {
  const lines: string[] = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const row = bytes.subarray(i, i + 16);
    let hex = '';
    let ascii = '';
    for (let j = 0; j < 16; j++) {
      const b = row[j];
      hex += (j === 8 ? '  ' : j === 0 ? '' : ' ') + (b === undefined ? '  ' : b.toString(16).padStart(2, '0'));
      if (b !== undefined) ascii += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.';
    }
    lines.push(`${(offset + i).toString(16).padStart(8, '0')}  ${hex}  |${ascii}|`);
  }
  return lines;
}
