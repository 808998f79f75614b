/**
 * Boots a real Linux guest under QEMU and runs a shell script in it, with the host's `/` as its
 * root (so it runs the host's own node and this checkout's dist/), an ivshmem-doorbell device on
 * a host socket, and a writable results share. Used by `ivshmem bench --vm` and by the guest
 * tests (test/helpers/guest.ts), so both boot the same machine.
 *
 * The kernel and the initramfs come from scripts/guest-assets.mjs (Debian packages fetched with
 * `apt-get download`, cached under node_modules/.cache/ivshmem-guest/); its /init mounts
 * everything, runs the script named on the kernel command line in a chroot of the host root,
 * prints START_MARKER before it and `EXIT_MARKER<status>` after it, and powers off.
 *
 * - TCG (`-accel tcg,thread=multi -cpu max`) unless the host's KVM module is kvm_intel or
 *   kvm_amd: the kvm_pvm module of these machines cannot boot a stock kernel.
 * - The guest script runs with a clean environment: the harness prepends `PATH` (the directory
 *   of this process's node first) and `cd` to the package root. The results share is /results
 *   in the guest; `guest.file(name)` reads what the guest wrote there.
 * - Every wait has a deadline, the whole run has `timeoutMs`, and QEMU is SIGKILLed by PID by
 *   `close()`, when the run times out and from a `process.on('exit')` hook; it runs under
 *   `setpriv --pdeathsig KILL` when available.
 *
 * The ivshmem server must be listening on `ivshmemSocket` before the boot: QEMU's device
 * connects during realize.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { packageRoot } from '../paths.js';
import { withTimeout } from '../pool.js';

/** Printed by the guest's /init just before the script runs, and with the status after it. */
export const START_MARKER = 'IVSHMEM-GUEST-START';
export const EXIT_MARKER = 'IVSHMEM-GUEST-EXIT=';

/** The mount point of the results share inside the guest. */
export const GUEST_RESULTS = '/results';

export const QEMU_BINARY_NAME = 'qemu-system-x86_64';

const SCRIPT_NAME = '.guest-script.sh';

export interface GuestAssets {
  kernel: string;
  initramfs: string;
  kernelVersion: string;
  kernelPackage: string;
  busyboxPackage: string;
}

export interface GuestOptions {
  /** Shell script (sh) run in the guest, in the package root; its exit status is the guest's. */
  script: string;
  /** A listening ivshmem server (PeerServer): adds `ivshmem-doorbell` on it. */
  ivshmemSocket?: string;
  /** MSI-X vectors of the device (default 1). */
  vectors?: number;
  /** More ivshmem-doorbell properties ('ioeventfd=off': every Doorbell write reaches QEMU's MMIO handler, where it can be traced). */
  deviceProperties?: string;
  /** QEMU trace events (`-trace`), written to `traceFile` (`-D`). */
  trace?: { events: string[]; file: string };
  /** Adds a virtual IOMMU (intel-iommu, before the device; `intel_iommu=on`) and loads the VFIO modules. */
  vfio?: boolean;
  /** Deadline of the whole run, from QEMU's start: QEMU is killed when it passes. */
  timeoutMs: number;
  /** For failure messages (default 'guest'). */
  name?: string;
}

/** How a run ended: the script's status (from the marker) and timings from QEMU's start. */
export interface GuestResult {
  status: number;
  /** QEMU start → START_MARKER (the guest is about to run the script). */
  bootMs: number;
  /** QEMU start → the exit marker. */
  totalMs: number;
}

export const MISSING_TOOLS_FIX =
  'a guest needs qemu-system-x86 (apt-get install -y qemu-system-x86) and apt-get/dpkg-deb to fetch the guest kernel (.ci/run installs QEMU)';

/** An executable regular file named `name` on PATH, or null. */
export function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

export function findQemu(): string | null {
  return findOnPath(QEMU_BINARY_NAME);
}

/** The tools a guest boot needs that are missing here ([] when it can boot). */
export function missingGuestTools(): string[] {
  const missing: string[] = [];
  if (findQemu() === null) missing.push(QEMU_BINARY_NAME);
  for (const tool of ['apt-get', 'apt-cache', 'dpkg-deb']) if (findOnPath(tool) === null) missing.push(tool);
  return missing;
}

let assets: Promise<GuestAssets> | undefined;

/** The kernel and initramfs, built when missing (scripts/guest-assets.mjs in a child; the first fetch downloads ~70 MB). */
export function guestAssets(timeoutMs = 10 * 60_000): Promise<GuestAssets> {
  assets ??= (async () => {
    const script = join(packageRoot(), 'scripts', 'guest-assets.mjs');
    const child = spawn(process.execPath, [script, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code) => resolve(code));
    });
    let code: number | null;
    try {
      code = await withTimeout(exited, timeoutMs, () => 'scripts/guest-assets.mjs to build the guest kernel and initramfs');
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    if (code !== 0) throw new Error(`scripts/guest-assets.mjs failed (code ${code}): ${stderr.trim() || stdout.trim()}`);
    return JSON.parse(stdout) as GuestAssets;
  })();
  assets.catch(() => {
    assets = undefined; // let a later call try again
  });
  return assets;
}

/** `-accel kvm` only with a hardware KVM module (kvm_pvm cannot boot a stock kernel). */
export function hardwareKvm(): boolean {
  try {
    const modules = readdirSync('/sys/module');
    return modules.includes('kvm_intel') || modules.includes('kvm_amd');
  } catch {
    return false;
  }
}

/** QEMU's arguments for a run (exported for reports and failure messages). */
export function qemuArgs(a: GuestAssets, options: GuestOptions, shareDir: string): string[] {
  const kvm = hardwareKvm();
  const vfio = options.vfio === true;
  const cmdline = ['console=ttyS0', 'quiet', 'panic=-1', `ivshmem_guest.script=${GUEST_RESULTS}/${SCRIPT_NAME}`, `ivshmem_guest.vfio=${vfio ? 1 : 0}`];
  if (vfio) cmdline.push('intel_iommu=on');
  const args = [
    ...(kvm ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=multi', '-cpu', 'max']),
    '-smp', '2', '-m', '2048',
    '-machine', kvm && vfio ? 'q35,kernel-irqchip=split' : 'q35',
    '-no-reboot', '-nodefaults', '-display', 'none', '-serial', 'stdio',
    '-kernel', a.kernel, '-initrd', a.initramfs, '-append', cmdline.join(' '),
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    '-virtfs', `local,path=${shareDir},mount_tag=results,security_model=none,multidevs=remap`,
  ];
  if (vfio) args.push('-device', 'intel-iommu,intremap=on');
  if (options.ivshmemSocket !== undefined) {
    args.push('-chardev', `socket,id=ivshmem0,path=${options.ivshmemSocket}`);
    const extra = options.deviceProperties === undefined ? '' : `,${options.deviceProperties}`;
    args.push('-device', `ivshmem-doorbell,chardev=ivshmem0,vectors=${options.vectors ?? 1}${extra}`);
  }
  if (options.trace !== undefined) {
    for (const event of options.trace.events) args.push('-trace', event);
    args.push('-D', options.trace.file);
  }
  return args;
}

const live = new Set<ChildProcess>();
let exitHook = false;

type LineWaiter = { match: (line: string) => boolean; resolve: (line: string) => void; reject: (e: Error) => void };

export class Guest {
  readonly name: string;
  /** The results share on the host (/results in the guest); removed by close(). */
  readonly shareDir: string;
  readonly args: readonly string[];
  /** Serial console lines so far (without '\r'). */
  readonly lines: string[] = [];
  readonly #proc: ChildProcess;
  readonly #exited: Promise<void>;
  readonly #started = performance.now();
  readonly #deadline: number;
  readonly #timer: NodeJS.Timeout;
  readonly #waiters = new Set<LineWaiter>();
  #partial = '';
  #stderr = '';
  #bootMs: number | null = null;
  #status: number | null = null;
  #totalMs: number | null = null;
  #timedOut = false;
  #running = true;
  #closed: Promise<void> | undefined;

  constructor(a: GuestAssets, options: GuestOptions) {
    this.name = options.name ?? 'guest';
    this.shareDir = mkdtempSync(join(tmpdir(), 'ivshmem-guest-'));
    const preamble = [`export PATH=${dirname(process.execPath)}:$PATH`, `cd ${packageRoot()}`, ''].join('\n');
    writeFileSync(join(this.shareDir, SCRIPT_NAME), preamble + options.script);
    this.args = qemuArgs(a, options, this.shareDir);
    const qemu = findQemu();
    if (qemu === null) {
      rmSync(this.shareDir, { recursive: true, force: true });
      throw new Error(`${QEMU_BINARY_NAME} not on PATH: ${MISSING_TOOLS_FIX}`);
    }
    const setpriv = findOnPath('setpriv');
    const [command, args] = setpriv === null ? [qemu, this.args] : [setpriv, ['--pdeathsig', 'KILL', '--', qemu, ...this.args]];
    this.#proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(this.#proc);
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => {
        for (const p of live) p.kill('SIGKILL');
      });
    }
    this.#exited = new Promise<void>((resolve) => {
      this.#proc.once('error', (error) => {
        this.#stderr += `\n${error.message}`;
        resolve();
      });
      this.#proc.once('close', () => resolve());
    });
    this.#deadline = this.#started + options.timeoutMs;
    this.#timer = setTimeout(() => {
      this.#timedOut = true;
      this.#proc.kill('SIGKILL');
    }, options.timeoutMs);
    this.#proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => this.#receive(chunk));
    this.#proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.#stderr = (this.#stderr + chunk).slice(-8000)));
    void this.#exited.then(() => {
      this.#running = false;
      clearTimeout(this.#timer);
      live.delete(this.#proc);
      if (this.#partial !== '') this.#line(this.#partial);
      this.#partial = '';
      const error = new Error(`${this.name}: QEMU (pid ${this.pid}) exited${this.diagnostics()}`);
      for (const w of this.#waiters) w.reject(error);
      this.#waiters.clear();
    });
  }

  get pid(): number {
    return this.#proc.pid ?? -1;
  }

  /** QEMU is still running. */
  get running(): boolean {
    return this.#running;
  }

  /** All serial output so far. */
  get output(): string {
    return this.lines.join('\n');
  }

  /** QEMU start → START_MARKER, once seen. */
  get bootMs(): number | null {
    return this.#bootMs;
  }

  #receive(chunk: string): void {
    const parts = (this.#partial + chunk).split('\n');
    this.#partial = parts.pop()!;
    for (const p of parts) this.#line(p);
  }

  #line(raw: string): void {
    const line = raw.replace(/\r/g, '');
    this.lines.push(line);
    const now = performance.now() - this.#started;
    if (this.#bootMs === null && line.includes(START_MARKER)) this.#bootMs = now;
    const m = new RegExp(`${EXIT_MARKER}(\\d+)`).exec(line);
    if (m !== null && this.#status === null) {
      this.#status = Number(m[1]);
      this.#totalMs = now;
    }
    for (const w of [...this.#waiters]) {
      if (w.match(line)) {
        this.#waiters.delete(w);
        w.resolve(line);
      }
    }
  }

  /** The last serial lines and QEMU's stderr, for failure messages ('' or starting with a newline). */
  diagnostics(): string {
    const parts: string[] = [];
    if (this.#timedOut) parts.push('the run passed its timeoutMs and QEMU was killed');
    parts.push(`serial (last lines):\n${this.lines.slice(-40).join('\n')}`);
    if (this.#stderr.trim() !== '') parts.push(`QEMU stderr: ${this.#stderr.trim().slice(-4000)}`);
    return `\n${parts.join('\n')}`;
  }

  /** What is left of the run's deadline, capped by `timeoutMs`. */
  remaining(timeoutMs?: number): number {
    const left = Math.max(0, this.#deadline - performance.now());
    return timeoutMs === undefined ? left + 1000 : Math.min(timeoutMs, left + 1000);
  }

  /** The first serial line (past or future) containing `match` (a string) or matching it (a RegExp); rejects if QEMU exits first. */
  waitForLine(match: string | RegExp, timeoutMs?: number): Promise<string> {
    const test = typeof match === 'string' ? (l: string) => l.includes(match) : (l: string) => match.test(l);
    const found = this.lines.find(test);
    if (found !== undefined) return Promise.resolve(found);
    if (!this.#running) return Promise.reject(new Error(`${this.name}: QEMU exited before a line matching ${String(match)}${this.diagnostics()}`));
    let waiter!: LineWaiter;
    const promise = new Promise<string>((resolve, reject) => {
      waiter = { match: test, resolve, reject };
      this.#waiters.add(waiter);
    });
    return withTimeout(promise, this.remaining(timeoutMs), () => `${this.name}: a serial line matching ${String(match)}${this.diagnostics()}`).finally(() =>
      this.#waiters.delete(waiter),
    );
  }

  /** Waits for the exit marker and QEMU's exit (the guest powers off); rejects if QEMU exits without the marker. */
  async result(timeoutMs?: number): Promise<GuestResult> {
    await withTimeout(this.#exited, this.remaining(timeoutMs), () => `${this.name}: the guest to run its script and power off${this.diagnostics()}`);
    if (this.#status === null) throw new Error(`${this.name}: QEMU exited without the exit marker${this.diagnostics()}`);
    return { status: this.#status, bootMs: this.#bootMs ?? Number.NaN, totalMs: this.#totalMs! };
  }

  /** A file the guest wrote to /results (utf8). */
  file(name: string): string {
    return readFileSync(join(this.shareDir, name), 'utf8');
  }

  /** Names in the results share (without the harness's script). */
  files(): string[] {
    return readdirSync(this.shareDir).filter((f) => f !== SCRIPT_NAME);
  }

  /** SIGKILLs QEMU by PID if still running, waits for its exit, removes the share. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      clearTimeout(this.#timer);
      try {
        if (this.#running) this.#proc.kill('SIGKILL');
        await withTimeout(this.#exited, 10_000, `${this.name}: QEMU (pid ${this.pid}) to exit after SIGKILL`);
      } finally {
        live.delete(this.#proc);
        rmSync(this.shareDir, { recursive: true, force: true });
      }
    })();
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Boots a guest that runs `options.script` (see Guest); the assets are built first when missing. */
export async function bootGuest(options: GuestOptions): Promise<Guest> {
  return new Guest(await guestAssets(), options);
}
