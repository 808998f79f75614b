/** The `ivshmem` command line. Each subcommand lives in its own file under cli/. */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { benchCommand } from './bench.js';
import { addGuestCommand } from './guest.js';
import { addPeerCommand } from './peer.js';
import { addServerCommand } from './server.js';
import { addStatusCommand } from './status.js';

function packageVersion(): string {
  const url = new URL('../../package.json', import.meta.url);
  return (JSON.parse(readFileSync(url, 'utf8')) as { version: string }).version;
}

export function buildProgram(): Command {
  const program = new Command('ivshmem')
    .description('Shared memory with doorbells between Node.js processes and QEMU VMs (ivshmem-server protocol)')
    .version(packageVersion(), '-V, --version', 'print the version')
    .showHelpAfterError()
    .configureOutput({ outputError: (text, write) => write(text) });
  addServerCommand(program);
  addPeerCommand(program);
  addGuestCommand(program);
  addStatusCommand(program);
  program.addCommand(benchCommand());
  return program;
}

export async function main(argv: string[]): Promise<void> {
  await buildProgram().parseAsync(argv);
}
