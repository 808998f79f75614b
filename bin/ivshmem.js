#!/usr/bin/env node
// The `ivshmem` command; its code is compiled from cli/ into dist/cli/.
const fail = (error) => {
  // A LoadError's message is the diagnosis (causes and fixes): no stack trace on top of it.
  process.stderr.write(`ivshmem: ${error?.message ?? error}\n`);
  process.exitCode = typeof error?.exitCode === 'number' ? error.exitCode : 1;
};

// Imported here, not at the top: without a loadable addon even `--help` should end in the
// diagnosis, not in an uncaught exception.
import('../dist/cli/main.js').then(({ main }) => main(process.argv).catch(fail), fail);
