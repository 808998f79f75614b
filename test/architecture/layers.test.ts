/**
 * The house rule, checked: a folder per layer and imports only downward (docs/architecture.md).
 * Reads every import of lib/, cli/ and bench/ as text; a new folder must be given a rank here.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO } from '../helpers/paths.js';

/** Library layers, lowest first; one rank may hold several folders that must not import each other. */
const RANKS: Readonly<Record<string, number>> = {
  core: 0, // errors and argument checks
  sys: 1, // the native binding and the owners of its objects
  protocol: 2, // wire codec and memory layouts: pure
  endpoint: 3, // the interface everything above works over (a Peer, a guest's device)
  network: 4, // PeerServer, Peer
  guest: 4, // GuestDevice: the endpoint inside a VM (beside the network, not over it)
  doorbell: 5, // the bitmask doorbell and the receive loop
  channel: 6,
  devices: 6,
};

/** Layers above the endpoint interface: they work the same over any endpoint. */
const OVER_ENDPOINT = ['doorbell', 'channel', 'devices'];

interface Import {
  readonly from: string; // repository-relative file
  readonly spec: string;
  readonly target: string | null; // repository-relative, for relative specifiers
}

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(REPO, dir), { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sources(path));
    else if (entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

function importsOf(file: string): Import[] {
  const text = readFileSync(join(REPO, file), 'utf8');
  const found: Import[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) {
    const spec = (m[1] ?? m[2])!;
    const target = spec.startsWith('.') ? normalize(join(dirname(file), spec)).replace(/\.js$/, '.ts') : null;
    found.push({ from: file, spec, target });
  }
  return found;
}

/** 'lib/sys/x.ts' -> 'sys'; 'lib/index.ts' -> '' (the package entry). */
function layerOf(libFile: string): string {
  const parts = relative('lib', libFile).split('/');
  return parts.length === 1 ? '' : parts[0]!;
}

const lib = sources('lib').flatMap(importsOf);

describe('layers', () => {
  it('every folder of lib/ has a rank', () => {
    const folders = readdirSync(join(REPO, 'lib'), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    expect(folders.filter((f) => RANKS[f] === undefined)).toEqual([]);
  });

  it('lib/ imports only downward: a lower rank or its own folder, never cli/, bench/ or test/', () => {
    const wrong: string[] = [];
    for (const i of lib) {
      if (i.target === null) continue;
      if (!i.target.startsWith('lib/')) {
        wrong.push(`${i.from} imports ${i.spec} (outside the library)`);
        continue;
      }
      const from = layerOf(i.from);
      const to = layerOf(i.target);
      if (from === '' || from === to) continue; // the package entry sees everything; a folder sees itself
      if (to === '') wrong.push(`${i.from} imports the package entry ${i.spec}`);
      else if (RANKS[to]! >= RANKS[from]!) wrong.push(`${i.from} (${from}, rank ${RANKS[from]}) imports ${i.spec} (${to}, rank ${RANKS[to]})`);
    }
    expect(wrong).toEqual([]);
  });

  it('a folder is entered through its own files only: no import of another folder\'s index from inside lib/', () => {
    // Subpath entries (lib/<folder>/index.ts) are for users; inside, imports name the module.
    const viaIndex = lib.filter((i) => i.target !== null && /^lib\/[^/]+\/index\.ts$/.test(i.target) && layerOf(i.from) !== '' && layerOf(i.from) !== layerOf(i.target));
    expect(viaIndex.map((i) => `${i.from} -> ${i.spec}`)).toEqual([]);
  });

  it('protocol/ is pure: it imports nothing but core/ and its own files (no node:, no native binding)', () => {
    const wrong = lib.filter((i) => layerOf(i.from) === 'protocol' && !(i.target !== null && ['protocol', 'core'].includes(layerOf(i.target))));
    expect(wrong.map((i) => `${i.from} -> ${i.spec}`)).toEqual([]);
  });

  it('above the endpoint interface nothing names an endpoint kind: doorbell/, channel/, devices/ never import network/', () => {
    const wrong = lib.filter((i) => OVER_ENDPOINT.includes(layerOf(i.from)) && i.target !== null && layerOf(i.target) === 'network');
    expect(wrong.map((i) => `${i.from} -> ${i.spec}`)).toEqual([]);
  });

  it('the native interrupt table has one owner: only lib/sys/interrupt-table.ts makes or types it', () => {
    const wrong: string[] = [];
    for (const file of [...sources('lib'), ...sources('cli'), ...sources('bench')]) {
      if (file === 'lib/sys/interrupt-table.ts' || file === 'lib/sys/binding.ts') continue;
      const text = readFileSync(join(REPO, file), 'utf8');
      if (/\bnative\.InterruptTable\b|\bNativeInterruptTable\b|countersBuffer|vectorsBuffer/.test(text)) wrong.push(file);
    }
    expect(wrong).toEqual([]);
  });

  it('the apps sit beside the library: cli/ never imports bench/ statically; bench/ uses lib/ and cli/common only', () => {
    const wrong: string[] = [];
    for (const i of sources('cli').flatMap(importsOf)) {
      if (i.target?.startsWith('bench/')) wrong.push(`${i.from} imports ${i.spec}`);
    }
    for (const i of sources('bench').flatMap(importsOf)) {
      if (i.target === null || i.target.startsWith('bench/') || i.target.startsWith('lib/') || i.target === 'cli/common.ts') continue;
      wrong.push(`${i.from} imports ${i.spec}`);
    }
    expect(wrong).toEqual([]);
  });

  it('the library depends on no benchmark or chart package', () => {
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; files: string[] };
    expect(Object.keys(pkg.dependencies).filter((d) => /vega|tinybench|chart|d3/.test(d))).toEqual([]);
    expect(pkg.files.filter((f) => f.includes('bench'))).toEqual([]);
    const external = lib.filter((i) => i.target === null && !i.spec.startsWith('node:')).map((i) => i.spec);
    expect([...new Set(external)].filter((s) => !Object.keys(pkg.dependencies).includes(s))).toEqual([]);
  });
});
