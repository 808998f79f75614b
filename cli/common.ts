/** What the subcommands share: usage errors (exit 2), failures (exit 1), number parsing, output. */
import { Command, InvalidArgumentError } from 'commander';

/** Exit status for a command line that could not be understood (as most Unix tools do). */
export const USAGE_EXIT_CODE = 2;

/**
 * A failure the user should see as one line: bin/ivshmem.js prints `ivshmem: <message>` and
 * exits with `exitCode`.
 */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

/**
 * A subcommand of `program` (the root command, or a group such as `guest`) with inherited output
 * settings; its usage errors exit with 2.
 */
export function subcommand(program: Command, name: string): Command {
  const path = [name];
  for (let c: Command | null = program; c?.parent != null; c = c.parent) path.unshift(c.name());
  return program
    .command(name)
    .showHelpAfterError(`(run 'ivshmem ${path.join(' ')} --help' for usage)`)
    .exitOverride((error) => {
      // Only commander's own parse errors and help output get here, never an action's errors.
      process.exit(error.exitCode === 0 ? 0 : USAGE_EXIT_CODE);
    });
}

/** A commander option parser for a decimal integer in [min, max]. */
export function integerArg(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = /^\d+$/.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`Expected a whole number from ${min} to ${max}.`);
    }
    return n;
  };
}

/** A commander option parser for permission bits written in octal (600, 0660). */
export function octalModeArg(value: string): number {
  const n = /^[0-7]{1,4}$/.test(value) ? Number.parseInt(value, 8) : NaN;
  if (Number.isNaN(n) || n > 0o777) {
    throw new InvalidArgumentError('Expected octal permission bits from 0 to 777, e.g. 600 or 660.');
  }
  return n;
}

/** Decimal or 0x-prefixed hexadecimal, as a safe non-negative integer; null if it is neither. */
export function parseUnsigned(text: string): number | null {
  if (!/^(?:0x[0-9a-f]+|\d+)$/i.test(text)) return null;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : null;
}

/**
 * Writes one line to stdout. Pipes and files are written synchronously on Linux, so a line is
 * out before the next event is handled (and before the process exits).
 */
export function printLine(line: string): void {
  process.stdout.write(`${line}\n`);
}

export function printError(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** A reader that went away (`ivshmem server | head -1`) must not crash a running server or peer. */
export function ignoreClosedOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE') throw error;
    });
  }
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
