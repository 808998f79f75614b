import { spawnSync } from 'node:child_process';
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
    expect(result.stdout).toMatch(/^\s+guest\b/m);
    expect(result.stdout).toMatch(/^\s+status\b/m);
  });

  it('without a loadable addon, even --help ends in the load diagnosis (causes and fixes), not a stack trace', () => {
    for (const args of [['--help'], ['peer', '-S', '/tmp/x']]) {
      const r = spawnSync(process.execPath, [join(REPO, 'bin', 'ivshmem.js'), ...args], {
        encoding: 'utf8',
        timeout: 30_000,
        env: { ...process.env, IVSHMEM_NATIVE: '/nonexistent/ivshmem.node' },
      });
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr).toMatch(/^ivshmem: Could not load the ivshmem native addon\.\nPossible causes:\n/);
      expect(r.stderr).toContain('Possible solutions:');
      expect(r.stderr).not.toMatch(/^\s+at /m);
      expect(r.stdout).toBe('');
    }
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
