#!/usr/bin/env node
/**
 * The assets of the guest tests (test/helpers/guest.ts): a Debian kernel and an initramfs,
 * built when missing into node_modules/.cache/ivshmem-guest/ (outside git).
 *
 * - Kernel: the `linux-image-6.1.*-amd64` package that `linux-image-amd64` depends on,
 *   fetched with `apt-get download` and unpacked with `dpkg-deb -x` (nothing is installed).
 * - Initramfs: busybox (package busybox-static, same way), the modules the guest needs
 *   (virtio, 9p, overlay; VFIO), and /init (below), as a gzip'd cpio `newc` archive written
 *   here in Node (no cpio tool needed).
 *
 * /init mounts the host's `/` over 9p read-only (tag `hostroot`) under a tmpfs overlay,
 * mounts the writable results share (tag `results`, cache=none) at /results, and runs the
 * script named on the kernel command line (`ivshmem_guest.script=PATH`, a path inside the
 * chroot) in a chroot of that root. It prints `IVSHMEM-GUEST-START` before the script and
 * `IVSHMEM-GUEST-EXIT=<status>` after it, then powers off. `ivshmem_guest.vfio=1` also loads
 * the VFIO modules.
 *
 * Idempotent (a manifest.json records what was built, keyed on the versions and the init
 * text); a lock directory keeps two test processes from building at once.
 *
 * Usage: node scripts/guest-assets.mjs [--json]   (prints the manifest as JSON with --json)
 * As a module: `import { ensureGuestAssets } from './guest-assets.mjs'`.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { delimiter, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const REPO = fileURLToPath(new URL('../', import.meta.url));
export const CACHE_DIR = process.env.IVSHMEM_GUEST_CACHE ?? join(REPO, 'node_modules', '.cache', 'ivshmem-guest');

export const START_MARKER = 'IVSHMEM-GUEST-START';
export const EXIT_MARKER = 'IVSHMEM-GUEST-EXIT=';

/** Loaded in this order with insmod (no depmod): the root filesystem. */
const BASE_MODULES = ['virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'netfs', 'fscache', '9pnet', '9pnet_virtio', '9p', 'overlay'];
/** With ivshmem_guest.vfio=1, after the base ones. */
const VFIO_MODULES = ['vfio', 'vfio_iommu_type1', 'vfio_virqfd', 'irqbypass', 'vfio-pci-core', 'vfio-pci'];

const INIT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /usr/bin /usr/sbin /sbin
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
fail() { echo "ivshmem-guest init: $*"; echo "${EXIT_MARKER}255"; poweroff -f; }
load() {
  for m in "$@"; do
    insmod /lib/modules/$m.ko 2>/tmp/insmod.err || {
      [ -d /sys/module/$(echo $m | tr - _) ] || fail "insmod $m failed: $(cat /tmp/insmod.err)"
    }
  done
}
script=; vfio=0
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ivshmem_guest.script=*) script="\${arg#ivshmem_guest.script=}" ;;
    ivshmem_guest.vfio=*) vfio="\${arg#ivshmem_guest.vfio=}" ;;
  esac
done
[ -n "$script" ] || fail "no ivshmem_guest.script= on the kernel command line"
load ${BASE_MODULES.join(' ')}
[ "$vfio" = 1 ] && load ${VFIO_MODULES.join(' ')}
mkdir -p /mnt/lower /mnt/rw /mnt/root
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /mnt/lower || fail "mounting the host root (9p tag hostroot) failed"
mount -t tmpfs -o size=512m tmpfs /mnt/rw || fail "tmpfs failed"
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay /mnt/root || fail "overlay mount failed"
r=/mnt/root
mount -t proc proc $r/proc && mount -t sysfs sysfs $r/sys && mount -t devtmpfs devtmpfs $r/dev || fail "mounting proc/sys/dev in the chroot failed"
mkdir -p $r/dev/shm $r/dev/pts $r/tmp $r/run $r/results
# No tmpfs over /tmp: the checkout may live there (CI clones into it); the overlay keeps it writable.
mount -t tmpfs tmpfs $r/dev/shm && mount -t tmpfs tmpfs $r/run || fail "tmpfs in the chroot failed"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none results $r/results || fail "mounting the results share (9p tag results) failed"
echo "${START_MARKER}"
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TERM=dumb chroot $r /bin/sh "$script"
status=$?
sync
umount $r/results 2>/dev/null
echo "${EXIT_MARKER}$status"
poweroff -f
`;

// ---------------------------------------------------------------------------------------------

class AssetError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'GuestAssetError';
    this.code = 'ERR_IVSHMEM_GUEST_ASSETS';
  }
}

function run(command, args, what, options = {}) {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...options });
  } catch (error) {
    if (error.code === 'ENOENT') throw new AssetError(`${what}: \`${command}\` is not on PATH (a Debian system with apt and dpkg is needed)`, { cause: error });
    const stderr = String(error.stderr ?? '').trim();
    throw new AssetError(`${what}: \`${command} ${args.join(' ')}\` failed (${error.status ?? error.signal})${stderr ? `: ${stderr.slice(-2000)}` : ''}`, { cause: error });
  }
}

/** `apt-cache show PKG` succeeds; after one `apt-get update` when the package lists lack it. */
let updated = false;
function aptShow(pkg) {
  try {
    return execFileSync('apt-cache', ['show', '--no-all-versions', pkg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    if (error.code === 'ENOENT') throw new AssetError('`apt-cache` is not on PATH: the guest assets need a Debian system with apt', { cause: error });
    if (updated) throw new AssetError(`apt knows no package ${pkg}, even after \`apt-get update\``, { cause: error });
    run('apt-get', ['update', '-qq'], `package ${pkg} unknown to apt; \`apt-get update\` (needs root)`);
    updated = true;
    return aptShow(pkg);
  }
}

function field(stanza, name) {
  const m = new RegExp(`^${name}: (.*)$`, 'm').exec(stanza);
  return m === null ? null : m[1].trim();
}

/** The exact kernel package `linux-image-amd64` depends on, and its version. */
function resolveKernelPackage() {
  const meta = aptShow('linux-image-amd64');
  const depends = field(meta, 'Depends') ?? '';
  const name = /linux-image-[0-9][^\s,(|]*-amd64/.exec(depends)?.[0];
  if (name === undefined) throw new AssetError(`linux-image-amd64 depends on no linux-image-*-amd64 (Depends: ${depends})`);
  return { name, version: field(aptShow(name), 'Version') };
}

/** PKG's .deb in CACHE_DIR/debs (downloaded when missing), unpacked into CACHE_DIR/<dir>. */
function fetchAndUnpack(pkg, version, dir) {
  const debs = join(CACHE_DIR, 'debs');
  mkdirSync(debs, { recursive: true });
  const tag = `${pkg}_${version}`.replace(/[^A-Za-z0-9._+-]/g, '_');
  const unpacked = join(CACHE_DIR, dir, tag);
  if (existsSync(join(unpacked, '.complete'))) return unpacked;
  const prefix = `${pkg}_${version.replace(/:/g, '%3a')}_`;
  const find = () => readdirSync(debs).find((f) => f.startsWith(prefix) && f.endsWith('.deb'));
  let deb = find();
  if (deb === undefined) {
    run('apt-get', ['download', '-qq', `${pkg}=${version}`], `downloading ${pkg} ${version}`, { cwd: debs });
    deb = find();
    if (deb === undefined) throw new AssetError(`apt-get download ${pkg}=${version} left no .deb in ${debs}`);
  }
  rmSync(unpacked, { recursive: true, force: true });
  mkdirSync(unpacked, { recursive: true });
  run('dpkg-deb', ['-x', join(debs, deb), unpacked], `unpacking ${deb}`);
  writeFileSync(join(unpacked, '.complete'), '');
  return unpacked;
}

// ---------------------------------------------------------------------------------------------
// cpio newc

function cpioEntry(name, mode, data = Buffer.alloc(0), rdev = [0, 0]) {
  const nameBytes = Buffer.from(`${name}\0`);
  const fields = [0, mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], nameBytes.length, 0];
  const header = Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`);
  const pad = (n) => Buffer.alloc((4 - (n % 4)) % 4);
  return Buffer.concat([header, nameBytes, pad(header.length + nameBytes.length), data, pad(data.length)]);
}

function buildInitramfs(busyboxRoot, modules) {
  const parts = [];
  for (const d of ['bin', 'dev', 'lib', 'lib/modules', 'mnt', 'proc', 'sys', 'tmp']) parts.push(cpioEntry(d, 0o040755));
  parts.push(cpioEntry('dev/console', 0o020600, undefined, [5, 1]));
  parts.push(cpioEntry('dev/null', 0o020666, undefined, [1, 3]));
  parts.push(cpioEntry('bin/busybox', 0o100755, readFileSync(join(busyboxRoot, 'bin', 'busybox'))));
  parts.push(cpioEntry('init', 0o100755, Buffer.from(INIT)));
  for (const [name, path] of modules) parts.push(cpioEntry(`lib/modules/${name}.ko`, 0o100644, readFileSync(path)));
  parts.push(cpioEntry('TRAILER!!!', 0));
  return gzipSync(Buffer.concat(parts), { level: 6 });
}

/** Every `*.ko` under `dir`: module name (as the file is named) → path. */
function findModules(dir, into = new Map()) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) findModules(path, into);
    else if (entry.name.endsWith('.ko')) into.set(entry.name.slice(0, -3), path);
  }
  return into;
}

// ---------------------------------------------------------------------------------------------
// Lock

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Holds CACHE_DIR/lock (a directory naming its owner's pid) around `fn`; waits up to `timeoutMs` for another holder. */
function withLock(fn, timeoutMs = 15 * 60_000) {
  mkdirSync(CACHE_DIR, { recursive: true });
  const lock = join(CACHE_DIR, 'lock');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, 'pid'), String(process.pid));
      break;
    } catch (error) {
      if (error.code !== 'EEXIST') throw error;
      let owner = NaN;
      try {
        owner = Number(readFileSync(join(lock, 'pid'), 'utf8'));
      } catch {
        // being created or removed
      }
      const age = (() => {
        try {
          return Date.now() - statSync(lock).mtimeMs;
        } catch {
          return 0;
        }
      })();
      if ((Number.isInteger(owner) && owner > 0 && !pidAlive(owner)) || (Number.isNaN(owner) && age > 10_000)) {
        rmSync(lock, { recursive: true, force: true }); // stale: its owner died
        continue;
      }
      if (Date.now() > deadline) throw new AssetError(`timed out after ${timeoutMs} ms waiting for ${lock} (held by pid ${owner})`);
      sleepSync(200);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * The guest assets, built when missing: `{ kernel, initramfs, kernelVersion, kernelPackage,
 * busyboxPackage, modules }` (absolute paths). Throws a GuestAssetError naming what is missing.
 */
export function ensureGuestAssets() {
  const manifestPath = join(CACHE_DIR, 'manifest.json');
  const initHash = createHash('sha256').update(INIT).update(BASE_MODULES.join()).update(VFIO_MODULES.join()).digest('hex').slice(0, 16);
  const cached = readManifest(manifestPath);
  if (cached !== null && cached.initHash === initHash && existsSync(cached.kernel) && existsSync(cached.initramfs)) return cached;
  return withLock(() => {
    const again = readManifest(manifestPath);
    if (again !== null && again.initHash === initHash && existsSync(again.kernel) && existsSync(again.initramfs)) return again;
    const missing = ['apt-get', 'apt-cache', 'dpkg-deb'].filter((tool) => !onPath(tool));
    if (missing.length > 0) throw new AssetError(`${missing.join(', ')} not on PATH: fetching the guest kernel and busybox needs a Debian system with apt and dpkg (or a cache built elsewhere in ${CACHE_DIR})`);
    const kernelPkg = resolveKernelPackage();
    const busyboxPkg = { name: 'busybox-static', version: field(aptShow('busybox-static'), 'Version') };
    const kernelRoot = fetchAndUnpack(kernelPkg.name, kernelPkg.version, 'kernel');
    const busyboxRoot = fetchAndUnpack(busyboxPkg.name, busyboxPkg.version, 'busybox');
    if (!existsSync(join(busyboxRoot, 'bin', 'busybox'))) throw new AssetError(`${busyboxPkg.name} ${busyboxPkg.version} has no bin/busybox`);
    const vmlinuz = readdirSync(join(kernelRoot, 'boot')).find((f) => f.startsWith('vmlinuz-'));
    if (vmlinuz === undefined) throw new AssetError(`${kernelPkg.name} has no boot/vmlinuz-*`);
    const kernelVersion = vmlinuz.slice('vmlinuz-'.length);
    const available = findModules(join(kernelRoot, 'lib', 'modules', kernelVersion, 'kernel'));
    const modules = [];
    for (const name of [...BASE_MODULES, ...VFIO_MODULES]) {
      const path = available.get(name) ?? available.get(name.replace(/-/g, '_')) ?? available.get(name.replace(/_/g, '-'));
      if (path === undefined) throw new AssetError(`kernel ${kernelVersion} (${kernelPkg.name}) has no module ${name}.ko`);
      modules.push([name, path]);
    }
    const initramfs = join(CACHE_DIR, `initramfs-${kernelVersion}-${initHash}.cpio.gz`);
    writeFileSync(`${initramfs}.tmp`, buildInitramfs(busyboxRoot, modules));
    renameSync(`${initramfs}.tmp`, initramfs);
    const manifest = {
      kernel: join(kernelRoot, 'boot', vmlinuz),
      initramfs,
      kernelVersion,
      kernelPackage: `${kernelPkg.name} ${kernelPkg.version}`,
      busyboxPackage: `${busyboxPkg.name} ${busyboxPkg.version}`,
      modules: modules.map(([name, path]) => `${name}: ${relative(kernelRoot, path)}`),
      initHash,
    };
    writeFileSync(`${manifestPath}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
    renameSync(`${manifestPath}.tmp`, manifestPath);
    return manifest;
  });
}

function onPath(name) {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    if (dir === '') return false;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function readManifest(path) {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return null;
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    const started = Date.now();
    const manifest = ensureGuestAssets();
    if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(manifest)}\n`);
    else console.log(`guest assets ready in ${Date.now() - started} ms:\n  kernel    ${manifest.kernel}\n  initramfs ${manifest.initramfs}`);
  } catch (error) {
    console.error(error instanceof AssetError ? `guest assets: ${error.message}` : error);
    process.exit(1);
  }
}
