/**
 * Helpers for the bench's own tests (its correctness, not its speed). The bench forks
 * dist/bench/worker.js, so the compiled workers must exist and be at least as new as the
 * sources under bench/ (`npm test` builds them first; by hand: npx tsc -p tsconfig.build.json).
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CellResult, Totals } from '../../bench/types.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const FIXTURES = join(ROOT, 'test', 'fixtures', 'bench');

export function assertWorkersBuilt(): void {
  const worker = join(ROOT, 'dist', 'bench', 'worker.js');
  let built: number;
  try {
    built = statSync(worker).mtimeMs;
  } catch {
    throw new Error(`${worker} is missing: build first (npx tsc -p tsconfig.build.json)`);
  }
  for (const name of readdirSync(join(ROOT, 'bench'))) {
    if (!name.endsWith('.ts')) continue;
    const source = join(ROOT, 'bench', name);
    const compiled = join(ROOT, 'dist', 'bench', name.replace(/\.ts$/, '.js'));
    let out: number;
    try {
      out = statSync(compiled).mtimeMs;
    } catch {
      throw new Error(`${compiled} is missing: rebuild (npx tsc -p tsconfig.build.json)`);
    }
    if (statSync(source).mtimeMs > out + 1000 && statSync(source).mtimeMs > built + 1000) {
      throw new Error(`${compiled} is older than ${source}: rebuild (npx tsc -p tsconfig.build.json)`);
    }
  }
}

/** Every number reachable in `value` (nested objects and arrays), with its path. */
export function numbersIn(value: unknown, path = '$'): { path: string; value: number }[] {
  if (typeof value === 'number') return [{ path, value }];
  if (Array.isArray(value)) return value.flatMap((v, i) => numbersIn(v, `${path}[${i}]`));
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).flatMap(([k, v]) => numbersIn(v, `${path}.${k}`));
  }
  return [];
}

export function cell(results: readonly CellResult[], workload: string, design: string, n = 1): CellResult {
  const found = results.find(
    (r) => r.workload === workload && r.design === design && (workload === 'broadcast' ? r.consumers === n : r.producers === n),
  );
  if (found === undefined) throw new Error(`no cell ${workload} ${n} ${design}`);
  if (found.error !== undefined) throw new Error(`cell ${workload} ${n} ${design} failed: ${found.error}`);
  return found;
}

export function totals(c: CellResult): Totals {
  if (c.totals === null) throw new Error(`cell ${c.workload} ${c.design} has no totals`);
  return c.totals;
}

export function traps(c: CellResult, register: string, kind: 'reads' | 'writes'): number {
  return c.trapsByRegister?.[register]?.[kind] ?? 0;
}
