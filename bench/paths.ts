/** Where things are: the package root (from source or from dist/), socket paths, the compile cache. */
import { accessSync, constants, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The nearest folder above this file with the package's binding.gyp (works from bench/ and dist/bench/). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'binding.gyp')) && existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the ivshmem package root (no binding.gyp above bench/)');
    dir = parent;
  }
}

let counter = 0;

/** A socket path unique to this process and call, directly under os.tmpdir() (UNIX socket paths are short). */
export function uniqueSocketPath(tag: string): string {
  counter += 1;
  return join(tmpdir(), `ivbench-${tag}-${process.pid}-${counter}.sock`);
}

/**
 * A writable cache folder for compiled baselines: node_modules/.cache/ivshmem-bench/ in the
 * package if it can be written, else os.tmpdir()/ivshmem-bench-cache.
 */
export function cacheDir(): string {
  const candidates = [join(packageRoot(), 'node_modules', '.cache', 'ivshmem-bench'), join(tmpdir(), 'ivshmem-bench-cache')];
  for (const dir of candidates) {
    try {
      mkdirSync(dir, { recursive: true });
      accessSync(dir, constants.W_OK);
      return dir;
    } catch {
      // try the next
    }
  }
  throw new Error(`no writable cache folder (tried ${candidates.join(', ')})`);
}
