/**
 * Before any test: fixtures run the compiled dist/ in child processes, so a source edited since
 * the last build would be tested stale. Rebuild dist/ (both TypeScript projects) when any .ts
 * under lib/, cli/ or bench/ is newer than its compiled .js, or the .js is missing.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const REPO = new URL('..', import.meta.url).pathname;

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(REPO, dir), { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sources(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

/** The first source whose compiled file is missing or older, or null when dist/ is current. */
export function staleSource(): string | null {
  for (const source of ['lib', 'cli', 'bench'].flatMap(sources)) {
    const built = join(REPO, 'dist', source.replace(/\.ts$/, '.js'));
    if (!existsSync(built) || statSync(built).mtimeMs < statSync(join(REPO, source)).mtimeMs) return source;
  }
  return null;
}

export default function setup(): void {
  const stale = staleSource();
  if (stale === null) return;
  process.stderr.write(`dist/ is older than ${relative(REPO, join(REPO, stale))}: rebuilding it (npm run build:ts)\n`);
  const tsc = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
  for (const project of ['tsconfig.build.json', 'tsconfig.bench.json']) {
    execFileSync(process.execPath, [tsc, '-p', project], { cwd: REPO, stdio: 'inherit', timeout: 300_000 });
  }
}
