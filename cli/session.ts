/**
 * The interactive session of `ivshmem peer` and `ivshmem guest peer`: over any Endpoint (a Peer
 * on the host, a GuestDevice in a VM) it reports interrupts, joins and leaves while it reads
 * commands from stdin, one per line (see COMMANDS; QEMU's ivshmem-client's `int`, `dump` and
 * `?` are understood too). With --json every event and every result is one JSON object per line
 * on stdout, the same on both sides, so that one script drives either. On a terminal (stdin and
 * stdout, without --json) it shows ivshmem-client's `cmd> ` prompt, with line editing and history.
 */
import { clearScreenDown, createInterface, cursorTo, moveCursor, type Interface } from 'node:readline';
import type { Endpoint, PeerVectors } from '../lib/endpoint/endpoint.js';
import { CliError, ignoreClosedOutput, messageOf, parseUnsigned, printLine } from './common.js';

export const COMMANDS = [
  'ring PEER [VECTOR]   ring PEER on VECTOR (default 0); your own ID rings yourself',
  'ring all [VECTOR]    ring every other known peer',
  'int PEER VECTOR      ring PEER on VECTOR (int, dump and ? as in QEMU ivshmem-client)',
  'int PEER all         ring every vector of PEER',
  'int all              ring every vector of every other known peer',
  'peers                list the other known peers as ID(VECTORS)',
  'dump                 a table of the own ID and every known peer with its vectors',
  'read OFFSET LENGTH   hex dump of shared memory',
  'write OFFSET HEX     write bytes given as hex digits (e.g. deadbeef) into shared memory',
  'help, ?              this list',
  'quit, exit           leave (as does end of input)',
] as const;

/** The "Commands" paragraph of a session command's --help. */
export const COMMANDS_HELP = `Commands (stdin, one per line; numbers are decimal or 0x hex):
${COMMANDS.map((c) => `  ${c}`).join('\n')}`;

/** The prompt on a terminal, as QEMU's ivshmem-client prints it. */
export const PROMPT = 'cmd> ';

/** One line of --json output. */
export type SessionEvent = { event: string } & Record<string, unknown>;

export interface RunSessionOptions<E extends Endpoint> {
  /** One JSON object per line instead of text. */
  json: boolean;
  /** Connects or opens the endpoint. */
  open: () => E | Promise<E>;
  /** The one-line message for an endpoint that could not be opened. */
  failure: (error: unknown) => string;
  /** Adds the reporting of events only this kind of endpoint has (before `connected` is printed). */
  attach?: (endpoint: E, session: Session) => void;
}

/**
 * Opens the endpoint and runs a session over it until quit, end of input, SIGINT or SIGTERM
 * (status 0). A failed open is printed as an error event with --json and thrown as a CliError
 * (status 1).
 */
export async function runSession<E extends Endpoint>(options: RunSessionOptions<E>): Promise<void> {
  ignoreClosedOutput();
  // Handlers go in first: a signal that arrives before them would kill the process outright.
  let session: Session | null = null;
  const onSignal = (): void => {
    // While opening there is nothing to tidy up yet (whatever open() holds goes with the process).
    if (session === null) process.exit(0);
    session.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const removeHandlers = (): void => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };

  let endpoint: E;
  try {
    endpoint = await options.open();
  } catch (error) {
    removeHandlers();
    const message = options.failure(error);
    if (options.json) printLine(JSON.stringify({ event: 'error', message }));
    throw new CliError(message);
  }
  session = new Session(endpoint, options.json, removeHandlers);
  options.attach?.(endpoint, session);
  session.start();
}

export class Session {
  readonly #endpoint: Endpoint;
  readonly #json: boolean;
  readonly #onStop: () => void;
  #done = false;
  #input: Interface | null = null;
  /** On a terminal: the prompt is shown (lines printed now go above it, and it is shown again). */
  #prompting = false;

  constructor(endpoint: Endpoint, json: boolean, onStop: () => void) {
    this.#endpoint = endpoint;
    this.#json = json;
    this.#onStop = onStop;
  }

  start(): void {
    const endpoint = this.#endpoint;
    // Before the listeners: a GuestDevice looks at its live bits here, and a join seen now is
    // in `connected` rather than a peer-joined line before it (all of this is one tick).
    const peers = endpoint.peers();
    endpoint.on('interrupt', (vector, count) =>
      this.report(
        { event: 'interrupt', vector, count },
        count === 1 ? `interrupt on vector ${vector}` : `interrupt on vector ${vector} (${count} coalesced)`,
      ),
    );
    endpoint.on('peer-joined', (id) => this.report({ event: 'peer-joined', id }, `peer ${id} joined`));
    endpoint.on('peer-left', (id) => this.report({ event: 'peer-left', id }, `peer ${id} left`));
    // A prompt and line editing only for a person at a terminal: pipes (scripts, tests) and
    // --json get the plain lines.
    const terminal = !this.#json && process.stdin.isTTY === true && process.stdout.isTTY === true;
    const input = terminal
      ? createInterface({
          input: process.stdin,
          output: process.stdout,
          prompt: PROMPT,
          terminal: true,
          historySize: 1000,
          removeHistoryDuplicates: true,
        })
      : createInterface({ input: process.stdin, crlfDelay: Infinity });
    this.#input = input;
    input.on('line', (line) => {
      if (this.#done) return;
      this.#prompting = false;
      this.#command(line);
      if (terminal && !this.#done) this.#prompt();
    });
    input.on('close', () => this.stop());
    // In raw mode ^C is a key, not a signal: it leaves as SIGINT does.
    if (terminal) input.on('SIGINT', () => this.stop());
    // Last: whoever reads this line may act on it at once (send a signal, write a command).
    this.report(
      { event: 'connected', id: endpoint.id, vectors: endpoint.vectors, size: endpoint.shm.size, peers },
      [
        `connected: id ${endpoint.id}, ${plural(endpoint.vectors, 'vector')}, ${endpoint.shm.size} bytes shared`,
        peersLine(peers),
      ],
    );
    if (terminal) this.#prompt();
  }

  /** Leaves: closes the endpoint and stops reading stdin, so that the process ends with status 0. */
  stop(): void {
    if (this.#done) return;
    this.#done = true;
    // The shell's prompt goes on a line of its own, not after ours.
    if (this.#prompting) process.stdout.write('\n');
    this.#prompting = false;
    this.#onStop();
    this.#endpoint.close();
    this.#input?.close();
    process.stdin.destroy();
  }

  /**
   * Prints `event` (with --json) or the `text` lines. On a terminal, lines that come while the
   * prompt is shown (an interrupt, a join) replace it, and the prompt with whatever was typed
   * follows them.
   */
  report(event: SessionEvent, text: string | string[]): void {
    if (this.#json) {
      printLine(JSON.stringify(event));
      return;
    }
    const lines = typeof text === 'string' ? [text] : text;
    const input = this.#input;
    if (!this.#prompting || input === null) {
      for (const line of lines) printLine(line);
      return;
    }
    if (process.env['TERM'] === 'dumb') {
      // No cursor moves on a dumb terminal (an Emacs shell buffer): the lines after the prompt.
      process.stdout.write('\n');
      for (const line of lines) printLine(line);
      input.prompt();
      return;
    }
    // Back to the start of the prompt (the input may have wrapped onto more rows) and clear it.
    const { rows } = input.getCursorPos();
    if (rows > 0) moveCursor(process.stdout, 0, -rows);
    cursorTo(process.stdout, 0);
    clearScreenDown(process.stdout);
    for (const line of lines) printLine(line);
    // prompt(true) redraws the prompt and the input from readline's record of how many rows
    // above the cursor its line starts (stale after pasted input): none, the cursor is at the
    // start of a fresh row now.
    (input as Interface & { prevRows?: number }).prevRows = 0;
    input.prompt(true);
  }

  #prompt(): void {
    this.#input?.prompt();
    this.#prompting = true;
  }

  #command(line: string): void {
    const words = line.trim().split(/\s+/).filter((w) => w !== '');
    const [name, ...args] = words;
    if (name === undefined || name.startsWith('#')) return;
    try {
      switch (name) {
        case 'ring':
          return this.#ring(args);
        case 'int':
          return this.#int(args);
        case 'dump':
          expectArgs(args, 0, 'dump');
          return this.#dump();
        case 'peers': {
          expectArgs(args, 0, 'peers');
          const peers = this.#endpoint.peers();
          return this.report({ event: 'peers', peers }, peersLine(peers));
        }
        case 'read':
          return this.#read(args);
        case 'write':
          return this.#write(args);
        case 'help':
        case '?':
          return this.report({ event: 'help', commands: [...COMMANDS] }, [...COMMANDS]);
        case 'quit':
        case 'exit':
          return this.stop();
        default:
          throw new UsageError(`unknown command ${JSON.stringify(name)}; try: ring, int, peers, dump, read, write, help, quit`);
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
      for (const { id } of this.#othersToRing()) this.#tryRing(id, vector);
      return;
    }
    this.#ringOne(number(args[0]!, 'peer'), vector);
  }

  /** ivshmem-client's `int PEER VECTOR`, `int PEER all` and `int all`. */
  #int(args: string[]): void {
    const usage = 'usage: int PEER VECTOR|all, or int all';
    if (args[0] === 'all') {
      if (args.length !== 1) throw new UsageError(usage);
      for (const { id } of this.#othersToRing()) this.#ringEvery(id);
      return;
    }
    if (args.length !== 2) throw new UsageError(usage);
    const id = number(args[0]!, 'peer');
    if (args[1] === 'all') return this.#ringEvery(id);
    this.#ringOne(id, number(args[1]!, 'vector'));
  }

  /** Rings every vector of `id`; one failure does not stop the others being rung. */
  #ringEvery(id: number): void {
    const count = this.#endpoint.vectorsOf(id);
    // A peer not known has no vectors: ringing its vector 0 gets the endpoint's own error for it.
    if (count === 0) return this.#ringOne(id, 0);
    for (let vector = 0; vector < count; vector++) this.#tryRing(id, vector);
  }

  /** The other peers, for the `all` forms: a UsageError when there are none. */
  #othersToRing(): PeerVectors[] {
    const targets = this.#endpoint.peers();
    if (targets.length === 0) throw new UsageError('no other peers to ring');
    return targets;
  }

  /** One ring of many: a failure (a peer without that vector) is reported, and the others go on. */
  #tryRing(id: number, vector: number): void {
    try {
      this.#ringOne(id, vector);
    } catch (error) {
      this.#error(messageOf(error));
    }
  }

  /** ivshmem-client's `dump`: the own ID and vectors, then every known peer with its vectors. */
  #dump(): void {
    const endpoint = this.#endpoint;
    const peers = endpoint.peers();
    const row = (id: number, vectors: number, own: boolean): string =>
      `${String(id).padStart(5)}  ${String(vectors).padStart(7)}${own ? '  (us)' : ''}`;
    this.report({ event: 'dump', id: endpoint.id, vectors: endpoint.vectors, peers }, [
      `${'ID'.padStart(5)}  VECTORS`,
      row(endpoint.id, endpoint.vectors, true),
      ...peers.map((p) => row(p.id, p.vectors, false)),
    ]);
  }

  #ringOne(id: number, vector: number): void {
    this.#endpoint.ring(id, vector);
    this.report({ event: 'rang', peer: id, vector }, `rang peer ${id} on vector ${vector}`);
  }

  #read(args: string[]): void {
    expectArgs(args, 2, 'read OFFSET LENGTH');
    const offset = number(args[0]!, 'offset');
    const length = number(args[1]!, 'length');
    if (length === 0) throw new UsageError('length must be at least 1');
    const bytes = this.#range(offset, length, 'read').slice();
    this.report({ event: 'read', offset, hex: Buffer.from(bytes).toString('hex') }, hexdump(offset, bytes));
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
    this.report(
      { event: 'written', offset, length: data.length },
      `wrote ${plural(data.length, 'byte')} at 0x${offset.toString(16)}`,
    );
  }

  /** The shared memory in [offset, offset + length), or a clear error if that is outside it. */
  #range(offset: number, length: number, what: string): Uint8Array {
    const size = this.#endpoint.shm.size;
    if (offset > size || length > size - offset) {
      throw new UsageError(
        `${what} of ${plural(length, 'byte')} at 0x${offset.toString(16)} is outside the shared memory (${size} bytes)`,
      );
    }
    return this.#endpoint.shm.bytes(offset, length);
  }

  #error(message: string): void {
    this.report({ event: 'error', message }, `error: ${message}`);
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

export function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function peersLine(peers: readonly PeerVectors[]): string {
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
