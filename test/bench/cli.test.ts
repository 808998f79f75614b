/**
 * `ivshmem bench` as a command: flags, exit statuses, where the files go, what goes to stdout
 * and to stderr. Runs the compiled benchCommand() through test/fixtures/bench/cli.mjs (the
 * same program bin/ivshmem.js runs once cli/main.ts registers the command).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertWorkersBuilt, FIXTURES } from './helpers.js';

const CLI = join(FIXTURES, 'cli.mjs');
let dir: string;

beforeAll(() => {
  assertWorkersBuilt();
  dir = mkdtempSync(join(tmpdir(), 'ivbench-cli-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(args: string[], cwd = dir): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 50_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const TINY = ['--workload', 'ping-pong,broadcast', '--design', 'qemu,bitmask', '--messages', '40', '--peers', '2', '--no-micro', '--no-baselines', '--no-vm'];

describe('ivshmem bench', () => {
  it('--help lists the options and the outputs', async () => {
    const { code, stdout } = await run(['--help']);
    expect(code).toBe(0);
    for (const flag of ['--quick', '--workload', '--design', '--messages', '--work-ns', '--json', '--svg', '--timeout']) expect(stdout).toContain(flag);
    expect(stdout).toContain('bench-results.json');
  });

  it('a bad flag value is a usage error (exit 2)', async () => {
    const bad = await run(['--workload', 'nope']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/Unknown workload 'nope'/);
    const zero = await run(['--messages', '0']);
    expect(zero.code).toBe(2);
  });

  it('prints the tables on stdout, plain progress on stderr, and writes the JSON and SVG where told', async () => {
    const json = join(dir, 'out.json');
    const svg = join(dir, 'out.svg');
    const { code, stdout, stderr } = await run([...TINY, '--json', json, '--svg', svg]);
    expect(code, stderr).toBe(0);
    expect(stdout).toMatch(/ping-pong — 2 peers/);
    expect(stdout).toMatch(/broadcast — 1 sender → 2 receivers/);
    expect(stdout).toMatch(/intercepts\/msg +2 +2/); // sparse ping-pong: qemu and bitmask both 2
    expect(stderr).toMatch(/\[1\/4\] ping-pong · qemu: [\d,]+ msg\/s/);
    expect(stderr).toContain(`wrote ${json}`);
    const report = JSON.parse(readFileSync(json, 'utf8')) as { results: { design: string }[]; machine: { cores: number } };
    expect(report.results.map((r) => r.design).sort()).toEqual(['bitmask', 'bitmask', 'qemu', 'qemu']);
    expect(report.machine.cores).toBeGreaterThan(0);
    expect(readFileSync(svg, 'utf8').startsWith('<svg')).toBe(true);
  });

  it('writes bench-results.json and bench-results.svg in the current folder by default; --no-json --no-svg write nothing', async () => {
    const here = mkdtempSync(join(dir, 'cwd-'));
    const first = await run([...TINY, '--quiet'], here);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toBe('');
    expect(existsSync(join(here, 'bench-results.json'))).toBe(true);
    expect(existsSync(join(here, 'bench-results.svg'))).toBe(true);
    const none = mkdtempSync(join(dir, 'none-'));
    const second = await run([...TINY, '--quiet', '--no-json', '--no-svg'], none);
    expect(second.code, second.stderr).toBe(0);
    expect(readdirSync(none)).toEqual([]);
  });

  it('a cell past its deadline makes the exit status 1, after printing and writing what it has', async () => {
    const json = join(dir, 'failed.json');
    const { code, stdout, stderr } = await run(['--workload', 'stream', '--design', 'qemu', '--messages', '50000000', '--timeout', '1', '--no-micro', '--no-baselines', '--no-vm', '--json', json, '--no-svg']);
    expect(code).toBe(1);
    expect(stdout).toContain('FAILED');
    expect(stderr).toMatch(/timed out after 1\.0 s/);
    expect(stderr).toMatch(/ivshmem: 1 cell\(s\) failed/);
    const report = JSON.parse(readFileSync(json, 'utf8')) as { results: { error?: string }[] };
    expect(report.results[0]!.error).toMatch(/timed out/);
  });
});
