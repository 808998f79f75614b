/**
 * `ivshmem bench`: every workload × every doorbell design over real processes and a real
 * PeerServer, with baselines (C eventfd, Node UNIX sockets, the library's own ping-pong and
 * channel) and micro benchmarks in the same run. Tables on stdout, progress on stderr, the raw
 * figures as JSON and a chart as SVG. The benchmark is an app of its own (bench/, not in the
 * published package); `ivshmem bench` hands its arguments to this command (cli/bench.ts).
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_JSON, DEFAULT_SVG, runBenchCli } from './cli.js';
import { DEFAULT_PEERS, DEFAULT_PRODUCERS, DEFAULT_WORK_NS, FULL_MESSAGES, QUICK_MESSAGES, isDesign, isWorkload } from './options.js';
import { DESIGNS, WORKLOADS, type DesignName, type WorkloadName } from './types.js';
import { CliError, ignoreClosedOutput, integerArg, messageOf, USAGE_EXIT_CODE } from '../cli/common.js';

interface BenchFlags {
  quick?: boolean;
  workload?: WorkloadName[];
  design?: DesignName[];
  messages?: number;
  producers?: number[];
  peers?: number[];
  workNs: number;
  backToBack?: boolean;
  timeout?: number;
  json: string | false;
  svg: string | false;
  baselines: boolean;
  micro: boolean;
  pin: boolean;
  quiet?: boolean;
  vm?: boolean;
}

function listArg<T extends string>(what: string, all: readonly T[], valid: (s: string) => s is T): (value: string, previous: T[] | undefined) => T[] {
  return (value, previous) => {
    const items = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
    for (const item of items) {
      if (!valid(item)) throw new InvalidArgumentError(`Unknown ${what} '${item}'; one of: ${all.join(', ')}.`);
    }
    return [...(previous ?? []), ...(items as T[])];
  };
}

function countsArg(min: number, max: number): (value: string, previous: number[] | undefined) => number[] {
  const one = integerArg(min, max);
  return (value, previous) => [...(previous ?? []), ...value.split(',').map((s) => one(s.trim()))];
}

const fmt = (n: number): string => n.toLocaleString('en-US');

export function benchCommand(): Command {
  return new Command('bench')
    .description('benchmark the doorbell designs (intercepts, kernel crossings, msg/s, latency) against C and Node baselines')
    .showHelpAfterError("(run 'ivshmem bench --help' for usage)")
    .exitOverride((error) => {
      // Only commander's own parse errors and help output get here, never the action's errors.
      process.exit(error.exitCode === 0 ? 0 : USAGE_EXIT_CODE);
    })
    .addOption(new Option('--quick', 'few messages per cell: the whole matrix, baselines and micro benchmarks in about 30 s on 2 cores'))
    .addOption(
      new Option('-w, --workload <names>', `workloads to run, comma-separated or repeated (default: all): ${WORKLOADS.join(', ')}`).argParser(
        listArg('workload', WORKLOADS, isWorkload),
      ),
    )
    .addOption(
      new Option('-d, --design <names>', `designs to run, comma-separated or repeated (default: all): ${DESIGNS.join(', ')}`).argParser(
        listArg('design', DESIGNS, isDesign),
      ),
    )
    .addOption(
      new Option(
        '-n, --messages <n>',
        `messages per cell for every workload (ping-pong: one-way messages; broadcast: broadcasts). Default ${describeCounts()}`,
      ).argParser(integerArg(2, 100_000_000)),
    )
    .addOption(new Option('--producers <list>', `fan-in producer counts (default ${DEFAULT_PRODUCERS.join(',')})`).argParser(countsArg(1, 31)))
    .addOption(new Option('--peers <list>', `broadcast receiver counts (default ${DEFAULT_PEERS.join(',')})`).argParser(countsArg(1, 31)))
    .addOption(new Option('--work-ns <ns>', 'busy work per message in the stream consumer, ns').argParser(integerArg(0, 10_000_000)).default(DEFAULT_WORK_NS))
    .addOption(new Option('--back-to-back', 'ping-pong: reply from inside the handler instead of waiting until the responder is idle (not the sparse regime)'))
    .addOption(new Option('--timeout <seconds>', 'per-cell deadline; a cell past it fails with a clear error and the run goes on (default 20, or 120 without --quick)').argParser(integerArg(1, 86_400)))
    .addOption(new Option('--json <file>', 'write the raw figures (with the machine) as JSON here').default(DEFAULT_JSON))
    .addOption(new Option('--no-json', 'do not write the JSON'))
    .addOption(new Option('--svg <file>', 'write the chart (intercepts/msg per design per workload, log scale) as SVG here').default(DEFAULT_SVG))
    .addOption(new Option('--no-svg', 'do not write the chart'))
    .addOption(new Option('--no-baselines', 'skip the baselines (C eventfd, Node UNIX socket, ivshmem ping-pong and channel)'))
    .addOption(new Option('--no-micro', 'skip the micro benchmarks (tinybench)'))
    .addOption(new Option('--no-pin', 'do not pin workers to CPUs (by default a cell with no more processes than CPUs gets one CPU per process)'))
    .addOption(new Option('--vm', 'only the workloads in a real VM: boot one guest (QEMU, TCG here) and count its Doorbell writes and interrupts with QEMU and the guest kernel'))
    .addOption(new Option('--no-vm', 'skip the VM part of the full run'))
    .addOption(new Option('--quiet', 'no progress on stderr'))
    .addHelpText(
      'after',
      `
Every peer is a separate process (dist/bench/worker.js) on a real PeerServer; every design
runs the same workload code through its own device model, and the counts (traps, injections,
kernel crossings, suppressed rings) are the sum of every process's stats(), never formulas.

Workloads: ping-pong (2 peers, sparse: each ping waits until the responder is idle), stream
(1 producer, the consumer does --work-ns per message), fan-in (N producers → 1 consumer),
broadcast (1 → N, per delivery). Designs: legacy2010, legacy2010-mask, qemu, bitmask
(shared-memory clear), bitmask-w1c (write-1-to-clear register).

In a real VM (--vm alone; also in the full run, not with --quick, where a guest can boot):
ping-pong, stream both ways and fan-in between Node in a guest (the real ivshmem-doorbell
device through VFIO) and Node peers on the host, for the qemu and bitmask designs and the
bitmask with the guest busy-polling. Doorbell writes are counted by QEMU's trace, interrupts
by the guest kernel, beside the models' counts; then the round trip of Node in the guest
against a C pong in the same guest. Needs qemu-system-x86 and apt-get (the guest kernel
comes from Debian's packages, cached in node_modules/.cache/ivshmem-guest/).

Output: progress on stderr (a live line on a terminal); the tables on stdout; the JSON
(${DEFAULT_JSON}) and the chart (${DEFAULT_SVG}) in the current folder unless --json/--svg
say otherwise. The C baseline is compiled with \${CC:-cc} -O2 into node_modules/.cache/ivshmem-bench/
(or the temp folder); without a compiler it is reported unavailable.

Exit status: 0; 1 if a cell failed (its error is in the table and the JSON); 2 for a bad
command line; 130 when interrupted.

Examples:
  ivshmem bench --quick
  ivshmem bench --workload fan-in --producers 2,4 --design qemu,bitmask --messages 100000
  ivshmem bench --quick --no-micro --json out.json --no-svg
  ivshmem bench --vm --quick`,
    )
    .action(async (flags: BenchFlags) => {
      ignoreClosedOutput();
      const controller = new AbortController();
      const onSignal = (): void => controller.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        const outcome = await runBenchCli({
          quick: flags.quick === true,
          ...(flags.workload ? { workloads: flags.workload } : {}),
          ...(flags.design ? { designs: flags.design } : {}),
          ...(flags.messages !== undefined ? { messages: flags.messages } : {}),
          ...(flags.producers ? { producers: flags.producers } : {}),
          ...(flags.peers ? { peers: flags.peers } : {}),
          workNs: flags.workNs,
          backToBack: flags.backToBack === true,
          ...(flags.timeout !== undefined ? { timeoutMs: flags.timeout * 1000 } : {}),
          json: flags.json,
          svg: flags.svg,
          baselines: flags.baselines,
          micro: flags.micro,
          pin: flags.pin,
          quiet: flags.quiet === true,
          ...(flags.vm !== undefined ? { vm: flags.vm ? ('only' as const) : false } : {}),
          signal: controller.signal,
        });
        if (outcome.failedCells > 0) throw new CliError(`${outcome.failedCells} cell(s) failed; see the tables above`);
      } catch (error) {
        if (controller.signal.aborted) throw new CliError('interrupted', 130);
        if (error instanceof CliError) throw error;
        throw new CliError(messageOf(error));
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}

function describeCounts(): string {
  const q = QUICK_MESSAGES;
  const f = FULL_MESSAGES;
  return `ping-pong ${fmt(f['ping-pong'])}, stream ${fmt(f.stream)}, fan-in ${fmt(f['fan-in'])}, broadcast ${fmt(f.broadcast)}; with --quick ${fmt(q['ping-pong'])}, ${fmt(q.stream)}, ${fmt(q['fan-in'])}, ${fmt(q.broadcast)}`;
}
