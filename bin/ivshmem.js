#!/usr/bin/env node
// The `ivshmem` command; its code is compiled from cli/ into dist/cli/.
import { main } from '../dist/cli/main.js';

main(process.argv).catch((error) => {
  process.stderr.write(`ivshmem: ${error?.message ?? error}\n`);
  process.exitCode = typeof error?.exitCode === 'number' ? error.exitCode : 1;
});
