/**
 * Test harness: drive a real QEMU `ivshmem-doorbell` device over the qtest protocol.
 *
 * QEMU is started exactly as `commandLine()` below builds it (TCG, `-S`, `-qtest stdio`: Debian's QEMU has no qtest accelerator) and
 * talks line-by-line on its stdin/stdout. The CPU never runs: every guest access is a qtest
 * command (`outl`/`inl` for PCI config space, `readl`/`writel` for MMIO and RAM,
 * `b64read`/`b64write` for the shared memory BAR). Guest-side interrupts are observed by
 * polling the MSI-X PBA (vector masked) or an MSI message written into guest RAM (vector
 * unmasked), never by IRQ lines.
 *
 * Robustness rules:
 * - every wait has a timeout (start, each command, polling helpers, quit);
 * - when QEMU exits, every queued and future command rejects with QEMU's stderr;
 * - a command timeout desynchronises the line protocol, so it kills the VM;
 * - QEMU does NOT exit when its qtest stdin hits EOF, so a QEMU whose parent dies would be
 *   orphaned. We therefore start it through `setpriv --pdeathsig KILL` (util-linux) when that
 *   is on PATH, and SIGKILL all live VMs from a `process.on('exit')` hook.
 *
 * The ivshmem server must be listening on `socketPath` BEFORE `QemuVm.start` is called:
 * the device connects during realize and blocks there until it has received the shm.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { findOnPath, isCi } from './env.js';

export const QEMU_BINARY_NAME = 'qemu-system-x86_64';

export const QEMU_MISSING_MESSAGE =
  `${QEMU_BINARY_NAME} not found on PATH: QEMU interop tests skipped. ` +
  'Install with `apt-get install -y qemu-system-x86`.';

/** Path of `qemu-system-x86_64` on PATH, or null. */
export function findQemu(): string | null {
  return findOnPath(QEMU_BINARY_NAME);
}

/**
 * For tests: the QEMU binary, or when absent: in CI (`CI` set and not ''/0/false/no) throws,
 * elsewhere returns null and the caller skips with {@link QEMU_MISSING_MESSAGE}.
 */
export function requireQemuOrSkip(): string | null {
  const qemu = findQemu();
  if (qemu !== null) return qemu;
  if (isCi()) {
    throw new Error(
      `QEMU is required in CI (CI=${process.env.CI}): ${QEMU_BINARY_NAME} not found on PATH. ` +
        'Install with `apt-get install -y qemu-system-x86`.',
    );
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Guest-physical layout (pc machine, device at slot 4)

/** PCI config address of the device: bus 0, slot 4, function 0 (devfn 0x20). */
export const CONFIG_ADDRESS_BASE = 0x8000_2000;
export const IVSHMEM_VENDOR_DEVICE = 0x1110_1af4;
/** Preferred BAR addresses (32-bit PCI hole of the pc machine; QEMU maps the PCI address space
 * below everything else, so any address not covered by RAM/ROM/APIC works). */
export const BAR0_ADDRESS = 0xe000_0000;
export const BAR1_ADDRESS = 0xe000_1000;
export const BAR2_ADDRESS = 0xe010_0000;
/** BAR2 is moved above 4 GiB when it would not end below the IOAPIC at 0xfec00000. */
export const BAR2_HIGH_ADDRESS = 0x1_0000_0000;
const PCI_HOLE_END = 0xfec0_0000;
/** A convenient guest RAM area for MSI targets: 0x100000 + 16 * vector. */
export const MSI_RAM_BASE = 0x10_0000;
/** Guest RAM dword used by {@link QemuVm.waitUntilConnected} (below 640 KiB, away from MSI_RAM_BASE). */
export const SYNC_RAM_ADDRESS = 0x8_0000;

export const REG_INTR_MASK = 0x00;
export const REG_INTR_STATUS = 0x04;
export const REG_IV_POSITION = 0x08;
export const REG_DOORBELL = 0x0c;

export interface QemuOptions {
  /** Unix socket of an ivshmem server that is already listening. */
  socketPath: string;
  /** `vectors=` of ivshmem-doorbell (default 1). */
  vectors?: number;
  /** `ioeventfd=` (default true). */
  ioeventfd?: boolean;
  /** Guest RAM in MiB (default 128). */
  memMb?: number;
  /** QEMU binary (default: `findQemu()`). */
  binary?: string;
  /** Time allowed until qtest answers the first command (default 10 000 ms). */
  startTimeoutMs?: number;
  /** Time allowed for each qtest reply (default 10 000 ms). A timeout kills the VM. */
  commandTimeoutMs?: number;
  /** Start QEMU through `setpriv --pdeathsig KILL` when available (default true). */
  pdeathsig?: boolean;
  /** Extra command-line arguments appended after the device. */
  extraArgs?: readonly string[];
}

interface Pending {
  line: string;
  timeoutMs: number;
  resolve: (reply: string) => void;
  reject: (error: Error) => void;
}

const live = new Set<QemuVm>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const vm of live) vm.kill();
  });
}

const STDERR_LIMIT = 256 * 1024;
const CHUNK = 256 * 1024;

function hex(n: number | bigint): string {
  if (typeof n === 'number') {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`not a non-negative integer: ${n}`);
  } else if (n < 0n) {
    throw new RangeError(`negative: ${n}`);
  }
  return '0x' + n.toString(16);
}

function u32(n: number): number {
  if (!Number.isInteger(n) || n < -0x8000_0000 || n > 0xffff_ffff) {
    throw new RangeError(`not a 32-bit value: ${n}`);
  }
  return n >>> 0;
}

function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class QemuVm implements AsyncDisposable {
  readonly pid: number;
  readonly options: Readonly<QemuOptions>;
  /** Full argv used (argv[0] is the executable actually spawned). */
  readonly argv: readonly string[];

  /** Set by setup(). */
  bar0 = BAR0_ADDRESS;
  bar1 = BAR1_ADDRESS;
  bar2 = BAR2_ADDRESS;
  bar0Size = 0;
  bar1Size = 0;
  shmSize = 0;
  /** MSI-X table size (Message Control + 1) and guest addresses of table and PBA. */
  msixVectors = 0;
  msixCap = 0;
  msixTable = 0;
  msixPba = 0;

  readonly #child: ChildProcess;
  readonly #commandTimeoutMs: number;
  readonly #queue: Pending[] = [];
  #stdoutBuf = '';
  #stderr = '';
  #stderrDropped = 0;
  #timer: NodeJS.Timeout | undefined;
  #dead: Error | undefined;
  #exitCode: number | null = null;
  #exitSignal: NodeJS.Signals | null = null;
  #exited = false;
  readonly #exitPromise: Promise<number | null>;
  #quitPromise: Promise<number | null> | undefined;
  #setupDone = false;
  #unexpected: string[] = [];

  private constructor(options: QemuOptions) {
    this.options = { ...options };
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 10_000;
    const binary = options.binary ?? findQemu();
    if (binary === null) throw new Error(QEMU_MISSING_MESSAGE);
    const qemuArgs = QemuVm.commandLine(options);
    let file = binary;
    let args = qemuArgs;
    if (options.pdeathsig !== false) {
      const setpriv = findOnPath('setpriv');
      if (setpriv !== null) {
        file = setpriv;
        args = ['--pdeathsig', 'KILL', '--', binary, ...qemuArgs];
      }
    }
    this.argv = [file, ...args];
    let resolveExit!: (code: number | null) => void;
    this.#exitPromise = new Promise((resolve) => (resolveExit = resolve));

    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#child = child;
    this.pid = child.pid ?? -1;
    if (child.pid !== undefined) {
      live.add(this);
      installExitHook();
    }
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => this.#onStdout(chunk));
    child.stderr!.on('data', (chunk: string) => this.#appendStderr(chunk));
    // EPIPE after QEMU died: the 'close' handler reports the real reason.
    child.stdin!.on('error', () => {});
    child.on('error', (err) => {
      this.#finish(null, null, err);
      resolveExit(null);
    });
    child.on('exit', (code, signal) => {
      this.#exitCode = code;
      this.#exitSignal = signal;
      // Normally 'close' follows at once; do not depend on it if something else holds the pipes.
      setTimeout(() => {
        this.#finish(code, signal, undefined);
        resolveExit(code);
      }, 1000).unref();
    });
    // 'close' comes after 'exit' once stdout/stderr are drained: all replies and all of stderr are in.
    child.on('close', (code, signal) => {
      this.#finish(code, signal, undefined);
      resolveExit(code);
    });
  }

  /** The QEMU arguments (without the binary) for these options: TCG, paused, qtest on stdio. */
  static commandLine(options: QemuOptions): string[] {
    const vectors = options.vectors ?? 1;
    if (!Number.isInteger(vectors) || vectors < 0) throw new RangeError(`bad vectors: ${vectors}`);
    const memMb = options.memMb ?? 128;
    const ioeventfd = options.ioeventfd ?? true;
    const path = options.socketPath.replaceAll(',', ',,');
    return [
      '-machine', 'pc',
      '-accel', 'tcg',
      '-S',
      '-qtest', 'stdio',
      '-qtest-log', '/dev/null',
      '-display', 'none',
      '-nodefaults',
      '-m', `${memMb}M`,
      '-chardev', `socket,id=ch0,path=${path}`,
      '-device', `ivshmem-doorbell,chardev=ch0,vectors=${vectors},ioeventfd=${ioeventfd ? 'on' : 'off'},addr=0x4`,
      ...(options.extraArgs ?? []),
    ];
  }

  /**
   * Spawns QEMU and resolves once qtest answers `endianness` with `little`. Rejects (and
   * reaps QEMU) with QEMU's stderr if it exits first (e.g. nothing listening on the socket),
   * or after `startTimeoutMs`.
   */
  static async start(options: QemuOptions): Promise<QemuVm> {
    const vm = new QemuVm(options);
    try {
      const reply = await vm.#enqueue('endianness', options.startTimeoutMs ?? 10_000);
      if (reply !== 'little') throw new Error(`unexpected endianness reply: ${reply}`);
    } catch (err) {
      vm.kill();
      await vm.#exitPromise;
      const e = err as Error;
      throw new Error(`QEMU failed to start: ${e.message}`, { cause: e });
    }
    return vm;
  }

  /** QEMU's stderr collected so far (last 256 KiB). */
  get stderr(): string {
    return this.#stderrDropped > 0 ? `[…${this.#stderrDropped} bytes dropped…]` + this.#stderr : this.#stderr;
  }

  /** True once QEMU has exited (and all output was read). */
  get exited(): boolean {
    return this.#exited;
  }

  get exitCode(): number | null {
    return this.#exitCode;
  }

  get exitSignal(): NodeJS.Signals | null {
    return this.#exitSignal;
  }

  /** Resolves with the exit code (null if killed by a signal or never started) once QEMU is gone. */
  waitForExit(): Promise<number | null> {
    return this.#exitPromise;
  }

  /** Lines on stdout that were neither replies nor `IRQ` notifications. */
  get unexpectedOutput(): readonly string[] {
    return this.#unexpected;
  }

  /**
   * Sends one qtest line. Commands are pipelined and answered strictly in order. Resolves with
   * the text after `OK`/`OK `; a `FAIL` reply rejects with an Error naming command and reply.
   */
  command(line: string, timeoutMs?: number): Promise<string> {
    return this.#enqueue(line, timeoutMs ?? this.#commandTimeoutMs);
  }

  #enqueue(line: string, timeoutMs: number): Promise<string> {
    if (/[\r\n]/.test(line)) return Promise.reject(new Error(`qtest command contains a newline: ${JSON.stringify(line)}`));
    if (this.#dead !== undefined) {
      return Promise.reject(new Error(`qtest command \`${line}\` not sent: ${this.#dead.message}`, { cause: this.#dead }));
    }
    return new Promise<string>((resolve, reject) => {
      this.#queue.push({ line, timeoutMs, resolve, reject });
      if (this.#queue.length === 1) this.#armTimer();
      this.#child.stdin!.write(line + '\n');
    });
  }

  #armTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const head = this.#queue[0];
    if (head === undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      const err = new Error(
        `qtest command \`${head.line}\` got no reply within ${head.timeoutMs} ms; killing QEMU (pid ${this.pid})` +
          this.#stderrSuffix(),
      );
      this.#fail(err);
      this.kill();
    }, head.timeoutMs);
  }

  #onStdout(chunk: string): void {
    this.#stdoutBuf += chunk;
    let nl: number;
    while ((nl = this.#stdoutBuf.indexOf('\n')) >= 0) {
      const line = this.#stdoutBuf.slice(0, nl).replace(/\r$/, '');
      this.#stdoutBuf = this.#stdoutBuf.slice(nl + 1);
      this.#onLine(line);
    }
  }

  #onLine(line: string): void {
    if (line.startsWith('IRQ ')) return; // asynchronous, only after irq_intercept_*; unused
    const head = this.#queue.shift();
    if (head === undefined) {
      if (this.#unexpected.length < 100) this.#unexpected.push(line);
      return;
    }
    this.#armTimer();
    if (line === 'OK') head.resolve('');
    else if (line.startsWith('OK ')) head.resolve(line.slice(3));
    else if (line.startsWith('FAIL')) head.reject(new Error(`qtest command \`${head.line}\` failed: ${line}`));
    else head.reject(new Error(`qtest command \`${head.line}\`: unexpected reply ${JSON.stringify(line)}`));
  }

  #appendStderr(chunk: string): void {
    this.#stderr += chunk;
    if (this.#stderr.length > STDERR_LIMIT) {
      const cut = this.#stderr.length - STDERR_LIMIT;
      this.#stderrDropped += cut;
      this.#stderr = this.#stderr.slice(cut);
    }
  }

  #stderrSuffix(): string {
    const s = this.stderr.trim();
    return s === '' ? ' (stderr empty)' : `; QEMU stderr:\n${s}`;
  }

  /** Rejects everything queued and refuses further commands. */
  #fail(err: Error): void {
    if (this.#dead === undefined) this.#dead = err;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const queued = this.#queue.splice(0);
    for (const p of queued) {
      p.reject(new Error(`qtest command \`${p.line}\` failed: ${err.message}`, { cause: err }));
    }
  }

  #finish(code: number | null, signal: NodeJS.Signals | null, spawnError: Error | undefined): void {
    if (this.#exited) return;
    this.#exited = true;
    live.delete(this);
    if (spawnError !== undefined) {
      this.#fail(new Error(`could not start QEMU (${this.argv[0]}): ${spawnError.message}`, { cause: spawnError }));
      return;
    }
    this.#exitCode = code;
    this.#exitSignal = signal;
    const how = signal !== null ? `signal ${signal}` : `code ${code}`;
    this.#fail(new Error(`QEMU (pid ${this.pid}) exited with ${how}${this.#stderrSuffix()}`));
  }

  // ------------------------------------------------------------------------------------------
  // PCI config space (slot 4)

  async configRead32(offset: number): Promise<number> {
    this.#checkConfigOffset(offset);
    // Enqueue both lines synchronously so that no other config access can interleave.
    const [, value] = await Promise.all([
      this.command(`outl 0xcf8 ${hex((CONFIG_ADDRESS_BASE | offset) >>> 0)}`),
      this.command('inl 0xcfc'),
    ]);
    return parseValue(value, 'inl 0xcfc');
  }

  async configWrite32(offset: number, value: number): Promise<void> {
    this.#checkConfigOffset(offset);
    await Promise.all([
      this.command(`outl 0xcf8 ${hex((CONFIG_ADDRESS_BASE | offset) >>> 0)}`),
      this.command(`outl 0xcfc ${hex(u32(value))}`),
    ]);
  }

  #checkConfigOffset(offset: number): void {
    if (!Number.isInteger(offset) || offset < 0 || offset > 0xfc || offset % 4 !== 0) {
      throw new RangeError(`bad PCI config offset ${offset} (dword aligned, 0..0xfc)`);
    }
  }

  /** Reads a BAR's size by writing all ones and restoring the old value. */
  async #sizeBar32(offset: number): Promise<number> {
    const old = await this.configRead32(offset);
    await this.configWrite32(offset, 0xffff_ffff);
    const mask = await this.configRead32(offset);
    await this.configWrite32(offset, old);
    return (~(mask & ~0xf) + 1) >>> 0;
  }

  async #sizeBar64(offset: number): Promise<number> {
    const oldLo = await this.configRead32(offset);
    const oldHi = await this.configRead32(offset + 4);
    await this.configWrite32(offset, 0xffff_ffff);
    await this.configWrite32(offset + 4, 0xffff_ffff);
    const lo = await this.configRead32(offset);
    const hi = await this.configRead32(offset + 4);
    await this.configWrite32(offset, oldLo);
    await this.configWrite32(offset + 4, oldHi);
    const mask = (BigInt(hi) << 32n) | BigInt((lo & ~0xf) >>> 0);
    return Number(((~mask) & 0xffff_ffff_ffff_ffffn) + 1n);
  }

  /**
   * Maps BAR0 at 0xe0000000, BAR1 (MSI-X) at 0xe0001000 and BAR2 (shm) at 0xe0100000 (or,
   * when it would not fit below 0xfec00000, at 0x100000000 aligned to its size), then enables
   * MEM|MASTER. Verifies vendor/device 1af4:1110 and reads the MSI-X capability.
   */
  async setup(): Promise<void> {
    const id = await this.configRead32(0x00);
    if (id !== IVSHMEM_VENDOR_DEVICE) {
      throw new Error(`no ivshmem device at slot 4: vendor/device reads ${hex(id)}, expected ${hex(IVSHMEM_VENDOR_DEVICE)}`);
    }
    this.bar0Size = await this.#sizeBar32(0x10);
    this.bar1Size = await this.#sizeBar32(0x14);
    const bar2Type = (await this.configRead32(0x18)) & 0xf;
    if ((bar2Type & 0x6) !== 0x4) throw new Error(`BAR2 is not a 64-bit memory BAR (low bits ${hex(bar2Type)})`);
    this.shmSize = await this.#sizeBar64(0x18);

    // MSI-X capability (ID 0x11) via the capability list.
    let cap = (await this.configRead32(0x34)) & 0xfc;
    let guard = 0;
    while (cap !== 0 && guard++ < 48) {
      const dw = await this.configRead32(cap);
      if ((dw & 0xff) === 0x11) break;
      cap = (dw >>> 8) & 0xfc;
    }
    if (cap === 0) throw new Error('ivshmem-doorbell has no MSI-X capability');
    this.msixCap = cap;
    const ctrl = (await this.configRead32(cap)) >>> 16;
    this.msixVectors = (ctrl & 0x7ff) + 1;
    const table = await this.configRead32(cap + 4);
    const pba = await this.configRead32(cap + 8);
    if ((table & 7) !== 1 || (pba & 7) !== 1) {
      throw new Error(`MSI-X table/PBA not in BAR1 (table ${hex(table)}, pba ${hex(pba)})`);
    }

    this.bar0 = alignUp(BAR0_ADDRESS, this.bar0Size);
    this.bar1 = alignUp(Math.max(BAR1_ADDRESS, this.bar0 + this.bar0Size), this.bar1Size);
    let bar2 = alignUp(Math.max(BAR2_ADDRESS, this.bar1 + this.bar1Size), this.shmSize);
    if (bar2 + this.shmSize > PCI_HOLE_END) bar2 = alignUp(BAR2_HIGH_ADDRESS, this.shmSize);
    this.bar2 = bar2;
    this.msixTable = this.bar1 + (table & ~7);
    this.msixPba = this.bar1 + (pba & ~7);

    await this.configWrite32(0x10, this.bar0);
    await this.configWrite32(0x14, this.bar1);
    await this.configWrite32(0x18, (bar2 % 0x1_0000_0000) >>> 0);
    await this.configWrite32(0x1c, Math.floor(bar2 / 0x1_0000_0000));
    const cmd = (await this.configRead32(0x04)) & 0xffff;
    await this.configWrite32(0x04, cmd | 0x6); // MEM | BUS MASTER (status bits written as 0)
    const check = (await this.configRead32(0x04)) & 0x6;
    if (check !== 0x6) throw new Error(`Command register did not take MEM|MASTER (reads ${hex(check)})`);
    const lo = (await this.configRead32(0x18)) & ~0xf;
    const hi = await this.configRead32(0x1c);
    if ((lo >>> 0) + hi * 0x1_0000_0000 !== bar2) throw new Error(`BAR2 did not take ${hex(bar2)}`);
    this.#setupDone = true;
  }

  #requireSetup(): void {
    if (!this.#setupDone) throw new Error('QemuVm.setup() has not been called');
  }

  // ------------------------------------------------------------------------------------------
  // BAR0 registers

  async readReg(offset: number): Promise<number> {
    this.#requireSetup();
    this.#checkReg(offset);
    return this.readGuest32(this.bar0 + offset);
  }

  async writeReg(offset: number, value: number): Promise<void> {
    this.#requireSetup();
    this.#checkReg(offset);
    await this.writeGuest32(this.bar0 + offset, value);
  }

  #checkReg(offset: number): void {
    if (!Number.isInteger(offset) || offset < 0 || offset % 4 !== 0 || offset >= Math.max(this.bar0Size, 4)) {
      throw new RangeError(`bad BAR0 register offset ${offset}`);
    }
  }

  ivPosition(): Promise<number> {
    return this.readReg(REG_IV_POSITION);
  }

  /** Doorbell = dest << 16 | vector. */
  async ring(dest: number, vector: number): Promise<void> {
    if (!Number.isInteger(dest) || dest < 0 || dest > 0xffff) throw new RangeError(`bad peer id ${dest}`);
    if (!Number.isInteger(vector) || vector < 0 || vector > 0xffff) throw new RangeError(`bad vector ${vector}`);
    await this.writeReg(REG_DOORBELL, ((dest << 16) | vector) >>> 0);
  }

  // ------------------------------------------------------------------------------------------
  // MSI-X

  /** Sets MSI-X Enable (bit 31 of the capability dword) and clears Function Mask (bit 30). */
  async enableMsix(): Promise<void> {
    this.#requireSetup();
    const dw = await this.configRead32(this.msixCap);
    await this.configWrite32(this.msixCap, ((dw | 0x8000_0000) & ~0x4000_0000) >>> 0);
  }

  async disableMsix(): Promise<void> {
    this.#requireSetup();
    const dw = await this.configRead32(this.msixCap);
    await this.configWrite32(this.msixCap, (dw & ~0x8000_0000) >>> 0);
  }

  /**
   * Barrier: resolves once QEMU has processed the server's whole connect sequence (version, ID,
   * shm, every existing peer's fds, then its own fds). QEMU handles everything after the shm
   * asynchronously, AFTER qtest already answers, so right after start()/setup() a ring to an
   * existing peer's higher vectors may still be ignored (or, with vector >= 256, fall back to
   * `vector & 0xff`).
   *
   * Method: its own fds come last, so ring our own ID on `vector` (default: the device's
   * `vectors - 1`, capped at 255 with ioeventfd=off; pass the server's vector count - 1 if it
   * sends fewer) with that MSI-X entry
   * temporarily routed to {@link SYNC_RAM_ADDRESS}, re-ringing until the MSI lands in RAM.
   * MSI-X enable state, the entry and the RAM dword are restored; the vector's PBA bit is left
   * clear. Peers that connect later are learned asynchronously too; this barrier does not cover
   * them (probe by ringing them until their eventfd fires).
   */
  async waitUntilConnected(vector?: number, timeoutMs = 5000): Promise<void> {
    this.#requireSetup();
    // With ioeventfd=off QEMU's MMIO handler uses `vector & 0xff`, so vectors >= 256 cannot be rung.
    const ringable = this.options.ioeventfd === false ? Math.min(this.msixVectors, 256) : this.msixVectors;
    const v = vector ?? ringable - 1;
    this.#checkVector(v);
    const self = await this.ivPosition();
    const entry = this.msixTable + 16 * v;
    const saved = await Promise.all([0, 4, 8, 12].map((o) => this.readGuest32(entry + o)));
    const savedCap = await this.configRead32(this.msixCap);
    const savedRam = await this.readGuest32(SYNC_RAM_ADDRESS);
    const magic = (0x5e1f_0000 | (v & 0xffff)) >>> 0;
    await this.writeGuest32(SYNC_RAM_ADDRESS, 0);
    await this.configWrite32(this.msixCap, ((savedCap | 0x8000_0000) & ~0x4000_0000) >>> 0);
    await this.routeVector(v, SYNC_RAM_ADDRESS, magic);
    const start = performance.now();
    try {
      for (;;) {
        await this.ring(self, v);
        // The ring is handled synchronously by qtest `writel`, the MSI by QEMU's main loop in
        // between later qtest commands: poll a little before ringing again.
        for (let i = 0; i < 50; i++) {
          if ((await this.readGuest32(SYNC_RAM_ADDRESS)) === magic) return;
          if (i >= 10) await sleep(1);
        }
        if (performance.now() - start >= timeoutMs) {
          throw new Error(
            `timed out after ${timeoutMs} ms waiting for QEMU to receive its own eventfd for vector ${v} ` +
              '(server sends fewer vectors? server stalled?)',
          );
        }
      }
    } finally {
      if (this.#dead === undefined) {
        await this.maskVector(v);
        // A late duplicate MSI may still be pending: flush it to the scratch dword.
        if (await this.pending(v)) {
          await this.unmaskVector(v);
          await this.maskVector(v);
        }
        await Promise.all([0, 4, 8, 12].map((o, i) => this.writeGuest32(entry + o, saved[i]!)));
        await this.configWrite32(this.msixCap, savedCap);
        await this.writeGuest32(SYNC_RAM_ADDRESS, savedRam);
      }
    }
  }

  #checkVector(vector: number): void {
    this.#requireSetup();
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.msixVectors) {
      throw new RangeError(`bad vector ${vector} (device has ${this.msixVectors})`);
    }
  }

  /** Programs table entry `vector` to write `data` at guest-physical `address`, then unmasks it.
   * A pending vector is delivered at the unmask. */
  async routeVector(vector: number, address: number, data: number): Promise<void> {
    this.#checkVector(vector);
    if (!Number.isSafeInteger(address) || address < 0 || address % 4 !== 0) throw new RangeError(`bad MSI address ${address}`);
    const entry = this.msixTable + 16 * vector;
    await Promise.all([
      this.writeGuest32(entry, (address % 0x1_0000_0000) >>> 0),
      this.writeGuest32(entry + 4, Math.floor(address / 0x1_0000_0000)),
      this.writeGuest32(entry + 8, data),
      this.writeGuest32(entry + 12, 0),
    ]);
  }

  async maskVector(vector: number): Promise<void> {
    this.#checkVector(vector);
    await this.writeGuest32(this.msixTable + 16 * vector + 12, 1);
  }

  async unmaskVector(vector: number): Promise<void> {
    this.#checkVector(vector);
    await this.writeGuest32(this.msixTable + 16 * vector + 12, 0);
  }

  /** PBA bit of `vector` (set while the vector is masked and an event arrived). */
  async pending(vector: number): Promise<boolean> {
    this.#checkVector(vector);
    const dw = await this.readGuest32(this.msixPba + 4 * Math.floor(vector / 32));
    return ((dw >>> (vector % 32)) & 1) === 1;
  }

  // ------------------------------------------------------------------------------------------
  // Guest memory

  async readGuest32(address: number): Promise<number> {
    const line = `readl ${hex(address)}`;
    return parseValue(await this.command(line), line) >>> 0;
  }

  async writeGuest32(address: number, value: number): Promise<void> {
    await this.command(`writel ${hex(address)} ${hex(u32(value))}`);
  }

  /**
   * Polls `readGuest32(address)` until it equals `value` (or satisfies the predicate).
   * Rejects after `timeoutMs` (default 5000) with the last value seen.
   */
  async waitForGuest32(
    address: number,
    value: number | ((v: number) => boolean),
    timeoutMs = 5000,
  ): Promise<void> {
    const pred = typeof value === 'number' ? (v: number) => v === value >>> 0 : value;
    const what = typeof value === 'number' ? `== ${hex(value >>> 0)}` : 'to satisfy the predicate';
    let last = 0;
    await this.#poll(async () => pred((last = await this.readGuest32(address))), timeoutMs, () =>
      `guest ${hex(address)} ${what} (last read ${hex(last)})`,
    );
  }

  /** Polls the PBA until `vector` is pending. */
  async waitForPending(vector: number, timeoutMs = 5000): Promise<void> {
    this.#checkVector(vector);
    await this.#poll(() => this.pending(vector), timeoutMs, () => `MSI-X vector ${vector} pending in the PBA`);
  }

  async #poll(check: () => Promise<boolean>, timeoutMs: number, describe: () => string): Promise<void> {
    const start = performance.now();
    for (let i = 0; ; i++) {
      if (await check()) return;
      if (performance.now() - start >= timeoutMs) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${describe()}`);
      }
      // Spin on qtest round trips for the first ~20 polls, then back off to 1 ms.
      if (i >= 20) await sleep(1);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Shared memory through BAR2

  #checkShm(offset: number, length: number): void {
    this.#requireSetup();
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.shmSize) {
      throw new RangeError(`shm range ${offset}+${length} outside 0..${this.shmSize}`);
    }
  }

  async shmRead(offset: number, length: number): Promise<Buffer> {
    this.#checkShm(offset, length);
    const parts: Promise<string>[] = [];
    for (let o = 0; o < length; o += CHUNK) {
      parts.push(this.command(`b64read ${hex(this.bar2 + offset + o)} ${hex(Math.min(CHUNK, length - o))}`));
    }
    const replies = await Promise.all(parts);
    return Buffer.concat(replies.map((r) => Buffer.from(r, 'base64')));
  }

  async shmWrite(offset: number, bytes: Uint8Array): Promise<void> {
    this.#checkShm(offset, bytes.length);
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const parts: Promise<string>[] = [];
    for (let o = 0; o < buf.length; o += CHUNK) {
      const chunk = buf.subarray(o, Math.min(buf.length, o + CHUNK));
      parts.push(this.command(`b64write ${hex(this.bar2 + offset + o)} ${hex(chunk.length)} ${chunk.toString('base64')}`));
    }
    await Promise.all(parts);
  }

  // ------------------------------------------------------------------------------------------
  // Lifetime

  /**
   * qtest has no quit command: sends SIGTERM (QEMU 7.2 exits with code 0) and resolves with
   * the exit code. SIGKILLs after `killAfterMs` (default 5000) and then resolves with null.
   * Idempotent. Queued commands reject.
   */
  quit(killAfterMs = 5000): Promise<number | null> {
    if (this.#quitPromise !== undefined) return this.#quitPromise;
    this.#quitPromise = (async () => {
      if (!this.#exited) {
        this.#fail(new Error(`QEMU (pid ${this.pid}) is being shut down by quit()`));
        this.#signal('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const killed = new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            this.kill();
            resolve();
          }, killAfterMs);
        });
        await Promise.race([this.#exitPromise, killed]);
        clearTimeout(timer);
      }
      return this.#exitPromise;
    })();
    return this.#quitPromise;
  }

  /** SIGKILL; idempotent, safe after exit. */
  kill(): void {
    this.#signal('SIGKILL');
  }

  #signal(sig: NodeJS.Signals): void {
    if (this.#exited || this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    try {
      this.#child.kill(sig);
    } catch {
      // already gone
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.quit(2000);
  }
}

function parseValue(reply: string, line: string): number {
  const m = /^0x([0-9a-fA-F]+)$/.exec(reply.trim());
  if (m === null) throw new Error(`qtest command \`${line}\`: cannot parse value ${JSON.stringify(reply)}`);
  const v = Number.parseInt(m[1]!, 16);
  if (!Number.isSafeInteger(v)) throw new Error(`qtest command \`${line}\`: value ${reply} too large`);
  return v;
}
