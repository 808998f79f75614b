/**
 * When the addon cannot be loaded, the one error says why and what to do (after sharp). The
 * binding module is copied into a temporary package without a build, and imported in a child.
 */
import { copyFileSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { killAllChildren, type ChildMessage } from '../helpers/children.js';
import { REPO, makeTempDir, removeDir } from '../helpers/paths.js';
import { nodeChild } from './helpers.js';

// What is under test is node-gyp-build's path: not a build named by IVSHMEM_NATIVE (test:asan).
delete process.env.IVSHMEM_NATIVE;

const dirs: string[] = [];
afterEach(async () => {
  await killAllChildren();
  for (const d of dirs.splice(0)) removeDir(d);
});

/** A package with dist's binding.js and errors.js under lib/ (as laid out there), and no build/ folder. */
function fakePackage(options: { bindingGyp?: boolean } = {}): string {
  const root = makeTempDir('load');
  dirs.push(root);
  for (const file of ['sys/binding.js', 'core/errors.js']) {
    mkdirSync(dirname(join(root, 'lib', file)), { recursive: true });
    copyFileSync(join(REPO, 'dist', 'lib', file), join(root, 'lib', file));
  }
  if (options.bindingGyp !== false) writeFileSync(join(root, 'binding.gyp'), '{ "targets": [] }\n');
  writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'ivshmem', type: 'module', engines: { node: '>=20.19' } }));
  symlinkSync(join(REPO, 'node_modules'), join(root, 'node_modules'), 'dir');
  return root;
}

async function importIn(root: string): Promise<ChildMessage> {
  const child = nodeChild('import-binding.mjs', [pathToFileURL(join(root, 'lib', 'sys', 'binding.js')).href]);
  const result = await child.next(['load-error', 'loaded']);
  expect(await child.exit()).toEqual({ code: 0, signal: null });
  return result;
}

describe('load errors', () => {
  it('no build: ERR_IVSHMEM_LOAD listing causes and solutions', async () => {
    const root = fakePackage();
    const r = await importIn(root);
    expect(r.type).toBe('load-error');
    expect(r.name).toBe('LoadError');
    expect(r.code).toBe('ERR_IVSHMEM_LOAD');
    const message = r.message as string;
    expect(message).toContain('Could not load the ivshmem native addon');
    expect(message).toContain('Possible causes');
    expect(message).toContain('Possible solutions');
    expect(message).toContain('npm rebuild');
    expect(message.indexOf('Possible causes')).toBeLessThan(message.indexOf('Possible solutions'));
    // The cause names the missing file; the original error is kept as `cause`.
    expect(message).toContain(join(root, 'build', 'Release', 'ivshmem.node'));
    expect(message).toMatch(/has not been built/);
    expect(message).toMatch(/build-essential/);
    expect(r.cause).toMatch(/No native build was found/);
  });

  it('a broken build: the dlopen failure is quoted, with the same structure', async () => {
    const root = fakePackage();
    mkdirSync(join(root, 'build', 'Release'), { recursive: true });
    writeFileSync(join(root, 'build', 'Release', 'ivshmem.node'), 'this is not a shared object\n');
    const r = await importIn(root);
    expect(r.type).toBe('load-error');
    expect(r.code).toBe('ERR_IVSHMEM_LOAD');
    const message = r.message as string;
    expect(message).toContain('Possible causes');
    expect(message).toContain('Possible solutions');
    expect(message).toContain('npm rebuild');
    expect(message).toMatch(/failed to load/);
    expect(message).toMatch(/invalid ELF header|file too short/);
    expect(r.cause).toMatch(/invalid ELF header|file too short/);
  });

  it('no package root (no binding.gyp above lib/): still a LoadError with the code', async () => {
    const root = fakePackage({ bindingGyp: false });
    const r = await importIn(root);
    expect(r.type).toBe('load-error');
    expect(r.code).toBe('ERR_IVSHMEM_LOAD');
    expect(r.message).toMatch(/binding\.gyp/);
  });

  it('control: the real package loads', async () => {
    const r = await importIn(join(REPO, 'dist'));
    expect(r.type).toBe('loaded');
    expect(r.exports).toContain('native');
  });
});
