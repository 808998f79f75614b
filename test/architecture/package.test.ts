/**
 * The published package, as a user gets it: `npm pack` (its prepack builds dist/ and the prebuilt
 * addon with prebuildify), then the tarball installed into a fresh app with no compiler, make or
 * python on PATH — node-gyp-build must load the prebuild, never build — and a peer exchange run
 * there. The tarball holds what the README cites and nothing the user does not need.
 *
 * The pack runs in a copy of the sources (node_modules linked), so that its builds never touch
 * the build/ and dist/ the other test files are using.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findOnPath } from '../helpers/env.js';
import { makeTempDir, REPO, removeDir } from '../helpers/paths.js';

const work = makeTempDir('pack');
afterAll(() => removeDir(work));

/** The packed tarball's size bound: what a user downloads (a test keeps it from creeping). */
const MAX_TARBALL_BYTES = 600 * 1024;

const NPM_CLI = (() => {
  const npm = findOnPath('npm');
  return npm === null ? null : realpathSync(npm);
})();

interface Packed {
  tarball: string;
  size: number;
  files: string[];
  packMs: number;
}

let packed: Packed | undefined;

function pack(): Packed {
  if (packed !== undefined) return packed;
  const src = join(work, 'src');
  mkdirSync(src);
  for (const entry of ['package.json', 'package-lock.json', 'binding.gyp', 'CMakeLists.txt', 'LICENSE', 'README.md', 'tsconfig.json', 'tsconfig.build.json', 'tsconfig.bench.json', 'bin', 'cli', 'lib', 'native', 'docs', 'examples', 'bench']) {
    cpSync(join(REPO, entry), join(src, entry), { recursive: true });
  }
  symlinkSync(join(REPO, 'node_modules'), join(src, 'node_modules'));
  const out = join(work, 'out');
  mkdirSync(out);
  const t0 = performance.now();
  const json = execFileSync(process.execPath, [NPM_CLI!, 'pack', '--json', '--pack-destination', out], { cwd: src, encoding: 'utf8', timeout: 240_000, stdio: ['ignore', 'pipe', 'pipe'] });
  const packMs = performance.now() - t0;
  const [info] = JSON.parse(json.slice(json.indexOf('['))) as { filename: string; size: number; files: { path: string }[] }[];
  packed = { tarball: join(out, info!.filename), size: info!.size, files: info!.files.map((f) => f.path), packMs };
  return packed;
}

/** A PATH with node and a shell only: no compiler, make or python. */
function bareTools(): string {
  const bin = join(work, 'bare-bin');
  mkdirSync(bin, { recursive: true });
  for (const [name, path] of [['node', process.execPath], ['sh', '/bin/sh']] as const) {
    if (!existsSync(join(bin, name))) symlinkSync(path, join(bin, name));
  }
  return bin;
}

describe.skipIf(NPM_CLI === null)('the published package', () => {
  it('holds the prebuilt addon, dist, the docs and examples the README cites, LICENSE; no maps, bench or tests; bounded size', () => {
    const { files, size, packMs } = pack();
    expect(files).toEqual(expect.arrayContaining(['LICENSE', 'README.md', 'package.json', 'bin/ivshmem.js', 'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/cli/main.js', 'prebuilds/linux-x64/ivshmem.node', 'binding.gyp', 'native/addon.cc']));
    const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
    for (const [, path] of readme.matchAll(/\]\(((?:docs|examples)\/[^)#]+)\)/g)) expect(files, path).toContain(path);
    for (const example of readdirSync(join(REPO, 'examples'))) expect(files).toContain(`examples/${example}`);
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    expect(files.filter((f) => /^(bench|test|dist\/bench|cli|lib|scripts)\//.test(f) || f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
    expect(size).toBeLessThan(MAX_TARBALL_BYTES);
    console.log(`npm pack: ${files.length} files, ${size} bytes packed (bound ${MAX_TARBALL_BYTES}), ${Math.round(packMs)} ms with prepack`);
  }, 300_000);

  it('installs with no compiler on PATH (the prebuild is loaded, nothing is built) and two peers ring each other', () => {
    const { tarball } = pack();
    const app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    const env = { HOME: process.env.HOME ?? '/root', PATH: bareTools(), npm_config_cache: process.env.npm_config_cache ?? join(process.env.HOME ?? '/root', '.npm') };
    for (const tool of ['g++', 'c++', 'cc', 'make', 'python3']) {
      expect(spawnSync('sh', ['-c', `command -v ${tool}`], { env }).status, tool).not.toBe(0);
    }
    const t0 = performance.now();
    const install = spawnSync(process.execPath, [NPM_CLI!, 'install', tarball, '--prefer-offline', '--no-audit', '--no-fund'], { cwd: app, env, encoding: 'utf8', timeout: 240_000 });
    const installMs = performance.now() - t0;
    expect(install.status, `${install.stdout}\n${install.stderr}`).toBe(0);
    const installed = join(app, 'node_modules', 'ivshmem');
    expect(existsSync(join(installed, 'build'))).toBe(false); // nothing was compiled
    expect(statSync(join(installed, 'prebuilds', 'linux-x64', 'ivshmem.node')).size).toBeGreaterThan(0);

    writeFileSync(
      join(app, 'exchange.mjs'),
      `import { PeerServer, Peer } from 'ivshmem';
const server = PeerServer.listen({ socketPath: ${JSON.stringify(join(work, 'app.sock'))}, vectors: 2 });
const a = await Peer.connect(server.socketPath);
const b = await Peer.connect(server.socketPath);
await a.waitForPeer(b.id);
const got = new Promise((resolve) => b.once('interrupt', (vector) => resolve(vector)));
new TextEncoder().encodeInto('hello', a.shm.bytes(0, 5));
a.ring(b.id, 1);
const vector = await got;
console.log(\`vector \${vector}: \${new TextDecoder().decode(b.shm.bytes(0, 5))}\`);
a.close(); b.close(); server.close();
`,
    );
    const r = spawnSync(process.execPath, ['exchange.mjs'], { cwd: app, env, encoding: 'utf8', timeout: 30_000 });
    expect(r.stdout + r.stderr).toBe('vector 1: hello\n');
    const cli = spawnSync(process.execPath, [join(app, 'node_modules', '.bin', 'ivshmem'), '--version'], { cwd: app, env, encoding: 'utf8', timeout: 30_000 });
    expect(cli.stdout.trim()).toBe((JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version);
    console.log(`npm install of the tarball with no compiler on PATH: ${Math.round(installMs)} ms`);
  }, 300_000);
});
