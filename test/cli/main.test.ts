import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../fixtures/cli/child.js';
import { killAllChildren } from '../helpers/children.js';
import { REPO } from '../helpers/paths.js';

afterEach(() => killAllChildren());

describe('ivshmem', () => {
  it('--version prints the version of package.json', async () => {
    const { version } = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
    const result = await run(['--version']);
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe(version);
  });

  it('--help lists the subcommands', async () => {
    const result = await run(['--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^\s+server\b/m);
    expect(result.stdout).toMatch(/^\s+peer\b/m);
  });

  it('server --help describes every flag', async () => {
    const result = await run(['server', '--help']);
    expect(result.code).toBe(0);
    for (const flag of ['-S, --socket', '-M, --shm', '-m, --shm-dir', '-l, --size', '-n, --vectors', '--max-peers', '--mode', '-p, --pid-file', '-F, --foreground', '-v, --verbose']) {
      expect(result.stdout).toContain(flag);
    }
    expect(result.stdout).toMatch(/always runs in the foreground/);
  });

  it('peer --help describes every flag and the commands', async () => {
    const result = await run(['peer', '--help']);
    expect(result.code).toBe(0);
    for (const text of ['-S, --socket', '--json', '--vectors', '--timeout', 'ring PEER [VECTOR]', 'ring all', 'peers', 'read OFFSET LENGTH', 'write OFFSET HEX', 'quit']) {
      expect(result.stdout).toContain(text);
    }
  });

  it('an unknown subcommand fails', async () => {
    const result = await run(['frobnicate']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/unknown command/);
  });
});
