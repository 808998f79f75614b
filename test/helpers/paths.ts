/**
 * Paths and names for tests: the repository, the built package, and socket paths, shm names
 * and temp dirs unique to this process and call (`<tag>-<pid>-<n>`), so that test files
 * running in parallel never meet.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll } from 'vitest';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const FIXTURES = join(REPO, 'test', 'fixtures');

/** `REPO/<file>` of the built package; throws with what to do when it was not built. */
export function requireBuilt(file = 'dist/lib/index.js'): string {
  const path = join(REPO, file);
  if (!existsSync(path)) throw new Error(`${path} is missing: build first with \`npx tsc -p tsconfig.build.json\` (the pretest script)`);
  return path;
}

let counter = 0;

/** `ivt-<tag>-<pid>-<n>`: unique to this process and call. */
export function uniqueName(tag: string): string {
  counter += 1;
  return `ivt-${tag}-${process.pid}-${counter}`;
}

/** A socket path unique to this process and call, in `dir` (default os.tmpdir(): short, < 108 bytes). */
export function uniqueSocketPath(tag: string, dir = tmpdir()): string {
  return join(dir, `${uniqueName(tag)}.sock`);
}

/** A POSIX shm name ('/ivt-…') unique to this process and call; its file is /dev/shm/ivt-…. */
export function uniqueShmName(tag: string): string {
  return `/${uniqueName(tag)}`;
}

/** A private temp dir (short path: socket paths must stay under 108 bytes). */
export function makeTempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `ivt-${tag}-`));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * A private temp dir for the tests of this file (short path, unique to this process and call):
 * made before all of them, removed after all of them.
 */
export function useTempDir(tag: string): string {
  const dir = join(tmpdir(), uniqueName(tag));
  beforeAll(() => {
    removeDir(dir); // a leftover of an earlier process with this pid
    mkdirSync(dir, { mode: 0o700 });
  });
  afterAll(() => removeDir(dir));
  return dir;
}

/** Unique paths and shm names whose files `cleanup()` removes (for afterEach). */
export class Scratch {
  readonly #paths: string[] = [];

  /** A socket path under os.tmpdir(). */
  socket(tag = 'sock'): string {
    return this.track(uniqueSocketPath(tag));
  }

  /** A file path under os.tmpdir() ending in `.<ext>`. */
  path(ext: string, tag = 'file'): string {
    return this.track(join(tmpdir(), `${uniqueName(tag)}.${ext}`));
  }

  /** A POSIX shm name without the leading '/' (as the CLI takes it); its file is /dev/shm/NAME. */
  shmName(tag = 'shm'): string {
    const name = uniqueName(tag);
    this.track(join('/dev/shm', name));
    return name;
  }

  /** Removes `path` at cleanup() too. */
  track(path: string): string {
    this.#paths.push(path);
    return path;
  }

  cleanup(): void {
    for (const p of this.#paths.splice(0)) rmSync(p, { force: true });
  }
}
