/**
 * `ivshmem bench`: hands its arguments to the benchmark, an app of its own (bench/, compiled to
 * dist/bench/) that the library does not depend on and the published package does not ship:
 * it is loaded only when asked for, so that every other command starts without it and its
 * chart libraries.
 */
import { Command } from 'commander';
import { CliError } from './common.js';

interface BenchApp {
  benchCommand(): Command;
}

const NOT_INSTALLED =
  'the benchmark is not part of the installed package; it runs from a clone of the repository: ' +
  'clone it, then `npm install` and `npx ivshmem bench --quick` there (docs/benchmarks.md)';

async function loadBench(): Promise<BenchApp> {
  const url = new URL('../bench/command.js', import.meta.url);
  try {
    return (await import(url.href)) as BenchApp;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    const missing = code === 'ERR_MODULE_NOT_FOUND' && String((error as Error).message).includes(url.pathname);
    if (missing) throw new CliError(NOT_INSTALLED);
    // A dependency of the benchmark (tinybench, vega) that is missing is the same situation.
    if (code === 'ERR_MODULE_NOT_FOUND') throw new CliError(`${NOT_INSTALLED} (${(error as Error).message})`);
    throw error;
  }
}

export function benchCommand(): Command {
  return new Command('bench')
    .description('benchmark the doorbell designs (intercepts, kernel crossings, msg/s, latency) against C and Node baselines (from a clone of the repository)')
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[arguments...]', "the benchmark's own options: ivshmem bench --help")
    .action(async (args: string[]) => {
      const bench = await loadBench();
      await bench.benchCommand().name('ivshmem bench').parseAsync(args, { from: 'user' });
    });
}
