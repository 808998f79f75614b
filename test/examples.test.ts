/**
 * The README's examples run as written: each is a file in examples/, the README quotes it
 * verbatim, and here it runs in a child process against the built package (guest.mjs runs
 * inside a VM: test/guest/cli.test.ts).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');

async function example(name: string): Promise<string> {
  const { stdout } = await run(process.execPath, [join(root, 'examples', name)], { cwd: root, timeout: 60_000 });
  return stdout;
}

describe('README examples', () => {
  it.each(['quickstart.mjs', 'bitmask.mjs', 'channel.mjs', 'guest.mjs'])('the README quotes examples/%s verbatim', (name) => {
    const source = readFileSync(join(root, 'examples', name), 'utf8');
    expect(readme).toContain(source);
  });

  it('quickstart: bob is interrupted on vector 1 and reads alice\'s bytes', async () => {
    expect(await example('quickstart.mjs')).toBe('bob got an interrupt on vector 1: hello from alice\n');
  });

  it('bitmask: 10,000 rings, one eventfd write', async () => {
    expect(await example('bitmask.mjs')).toBe('10000 rings, 9999 suppressed, 1 eventfd writes\n');
  });

  it('channel: every message crosses to the child process, most rings suppressed', async () => {
    const out = await example('channel.mjs');
    const m = /^consumer read (\d+) messages \((\d+) bytes\); (\d+) of (\d+) rings were suppressed, (\d+) eventfd writes$/m.exec(out);
    expect(m, out).not.toBeNull();
    const [, count, bytes, suppressed, rings, writes] = m!.map(Number);
    expect(count).toBe(100_000);
    expect(bytes).toBe(6_400_000);
    expect(rings).toBe(100_001); // every message, and the close
    expect(suppressed! + writes!).toBe(rings);
    expect(writes!).toBeGreaterThan(0);
  });
});
