/**
 * `ivshmem status`: a live region at a glance — size, vectors, peers and their vectors, the
 * bitmask header's live and pending bits and leases, and every channel it finds (producer,
 * consumer, capacity, fill, closed) — as text, `--json`, or refreshed with `--watch`. It only
 * reads the memory (lib/protocol/inspect.ts) and rings nobody. Through a server socket it has to
 * join as a peer for the memory (the others see it come and go); `-M NAME` opens a named region
 * directly and joins nothing.
 */
import { type Command, Option } from 'commander';
import { DEFAULT_SOCKET_PATH } from '../lib/network/server.js';
import { DEFAULT_MAX_SIZE, Peer } from '../lib/network/peer.js';
import { DEFAULT_SCAN_LIMIT, inspectRegion, type RegionSnapshot } from '../lib/protocol/inspect.js';
import { lowBuffer, SharedMemory } from '../lib/sys/shared-memory.js';
import { formatSize, sizeArg } from './size.js';
import { CliError, ignoreClosedOutput, integerArg, messageOf, printLine, subcommand } from './common.js';

interface StatusFlags {
  socket?: string;
  shm?: string;
  json?: boolean;
  watch?: number | true;
  timeout: number;
  scanLimit: number;
}

/** What one look at the region shows. */
interface Status extends RegionSnapshot {
  source: { socket: string } | { shm: string };
  /** Through a socket: this status peer's own ID and vectors, and the other peers. */
  id?: number;
  vectors?: number;
  peers?: { id: number; vectors: number }[];
  serverLost?: boolean;
}

const DEFAULT_WATCH_MS = 1000;

export function addStatusCommand(program: Command): Command {
  return subcommand(program, 'status')
    .description('show a live region at a glance: size, peers, the bitmask header, channels (read only)')
    .addOption(new Option('-S, --socket <path>', `a server's UNIX socket (default ${DEFAULT_SOCKET_PATH}); joins as a peer to get the memory`))
    .addOption(new Option('-M, --shm <name>', 'a named POSIX shared memory object instead: opened directly, joins nothing').conflicts('socket'))
    .addOption(new Option('--json', 'one JSON object per look'))
    .addOption(
      new Option('--watch [ms]', `look again every ms (default ${DEFAULT_WATCH_MS}) until SIGINT or SIGTERM`).argParser(integerArg(50, 2 ** 31 - 1)),
    )
    .addOption(new Option('--timeout <ms>', 'give up connecting after this many milliseconds').argParser(integerArg(1, 2 ** 31 - 1)).default(5000))
    .addOption(
      new Option('--scan-limit <size>', 'bytes after the header searched for channels (K, M, G suffixes)')
        .argParser(sizeArg(0, 2 ** 47))
        .default(DEFAULT_SCAN_LIMIT, formatSize(DEFAULT_SCAN_LIMIT)),
    )
    .addHelpText(
      'after',
      `
Text output:
  region: 4194304 bytes, through /tmp/ivshmem_socket as peer 3 (2 vectors)
  peers: 0(2) 1(2)
  bitmask header: 64 peer bits, data from byte 4096
    live: 0 1 3    pending: 1    leases: (none)
  channels (searched 4190208 bytes):
    offset  producer  consumer  capacity  used  fill   state
    4096    0         1         65536     96    0.1%   open

JSON (--json): {"source":{"socket":...},"size":...,"id":3,"vectors":2,"peers":[...],
  "header":{"maxPeers":64,"dataOffset":4096,"live":[...],"pending":[...],"leases":[...]} or null,
  "headerError":null,"channels":[{"offset":4096,"producer":0,"consumer":1,"capacity":65536,
  "used":96,"closed":false,"waiting":false}],"scanned":4190208}

It never writes the memory and rings nobody. Through -S it is a peer for as long as it runs
(the others are told it joined and left); -M NAME maps a named region and joins nothing.`,
    )
    .action((flags: StatusFlags) => runStatus(flags));
}

async function runStatus(flags: StatusFlags): Promise<void> {
  ignoreClosedOutput();
  const json = flags.json === true;
  const watchMs = flags.watch === undefined ? null : flags.watch === true ? DEFAULT_WATCH_MS : flags.watch;
  let peer: Peer | null = null;
  let shm: SharedMemory | null = null;
  const source: Status['source'] = flags.shm !== undefined ? { shm: flags.shm } : { socket: flags.socket ?? DEFAULT_SOCKET_PATH };
  try {
    if ('shm' in source) shm = SharedMemory.open(source.shm);
    else peer = await Peer.connect(source.socket, { timeout: flags.timeout, maxSize: DEFAULT_MAX_SIZE });
  } catch (error) {
    const message = `cannot open ${'shm' in source ? `the shared memory ${source.shm}` : source.socket}: ${messageOf(error)}`;
    if (json) printLine(JSON.stringify({ event: 'error', message }));
    throw new CliError(message);
  }
  const look = (): Status => {
    const memory = peer?.shm ?? shm!;
    const snapshot = inspectRegion(lowBuffer(memory), { size: memory.size, scanLimit: flags.scanLimit });
    return peer === null
      ? { source, ...snapshot }
      : { source, id: peer.id, vectors: peer.vectors, peers: peer.peers(), serverLost: peer.serverLost, ...snapshot };
  };
  const show = (): void => {
    const status = look();
    if (json) printLine(JSON.stringify(status));
    else for (const line of statusText(status)) printLine(line);
  };
  const close = (): void => {
    peer?.close();
    shm?.close();
  };
  try {
    show();
  } catch (error) {
    close();
    throw error;
  }
  if (watchMs === null) {
    close();
    return;
  }
  const timer = setInterval(() => {
    if (!json) printLine('');
    show();
  }, watchMs);
  const stop = (): void => {
    clearInterval(timer);
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    close();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

const ids = (list: readonly number[]): string => (list.length === 0 ? '(none)' : list.join(' '));

export function statusText(s: Status): string[] {
  const lines: string[] = [];
  const via =
    'shm' in s.source
      ? `the named object ${s.source.shm}`
      : `${s.source.socket} as peer ${s.id} (${s.vectors} vector${s.vectors === 1 ? '' : 's'})${s.serverLost === true ? ', server lost' : ''}`;
  lines.push(`region: ${s.size} bytes, through ${via}`);
  if (s.peers !== undefined) lines.push(`peers: ${s.peers.length === 0 ? '(none)' : s.peers.map((p) => `${p.id}(${p.vectors})`).join(' ')}`);
  if (s.header !== null) {
    lines.push(`bitmask header: ${s.header.maxPeers} peer bits, data from byte ${s.header.dataOffset}`);
    const leases = s.header.leases.length === 0 ? '(none)' : s.header.leases.map((l) => `${l.id}@${l.lease}`).join(' ');
    lines.push(`  live: ${ids(s.header.live)}    pending: ${ids(s.header.pending)}    leases: ${leases}`);
  } else {
    lines.push(s.headerError === null ? 'bitmask header: none' : `bitmask header: unreadable: ${s.headerError}`);
  }
  if (s.channels.length === 0) {
    lines.push(`channels: none found (searched ${s.scanned} bytes)`);
    return lines;
  }
  lines.push(`channels (searched ${s.scanned} bytes):`);
  const rows = [
    ['offset', 'producer', 'consumer', 'capacity', 'used', 'fill', 'state'],
    ...s.channels.map((c) => [
      String(c.offset),
      String(c.producer),
      String(c.consumer),
      String(c.capacity),
      String(c.used),
      `${((100 * c.used) / c.capacity).toFixed(1)}%`,
      c.closed ? 'closed by the producer' : c.waiting ? 'open, producer waiting for space' : 'open',
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) lines.push(`  ${r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]! + 2))).join('')}`.trimEnd());
  return lines;
}
