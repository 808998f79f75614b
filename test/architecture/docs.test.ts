/** `npm run docs`: the API reference builds from the sources' comments with no warning (typedoc.json). */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, REPO, removeDir } from '../helpers/paths.js';

const out = makeTempDir('api-docs');
afterAll(() => removeDir(out));

describe('the API reference', () => {
  it('typedoc builds it with warnings as errors, every entry point in it', () => {
    const r = spawnSync(process.execPath, [join(REPO, 'node_modules', 'typedoc', 'bin', 'typedoc'), '--out', out], { cwd: REPO, encoding: 'utf8', timeout: 120_000 });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).not.toMatch(/warning/i);
    const index = readFileSync(join(out, 'index.html'), 'utf8');
    for (const entry of ['index', 'sys', 'protocol', 'devices']) expect(index, entry).toContain(entry);
    expect(existsSync(join(out, 'classes'))).toBe(true);
    expect(readFileSync(join(out, 'hierarchy.html'), 'utf8')).toContain('GuestDevice');
  }, 150_000);
});
