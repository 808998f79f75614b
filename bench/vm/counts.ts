/**
 * The instruments of `bench --vm` that are not the package's: QEMU's trace of MMIO writes (each
 * Doorbell write of the guest, with `ioeventfd=off` on the device) and the guest kernel's
 * /proc/interrupts (each MSI-X interrupt it took). Pure parsing, and an incremental reader of the
 * trace file.
 */
import { closeSync, openSync, readSync } from 'node:fs';

/** The Doorbell register's offset in BAR0 (QEMU 7.2 under TCG traces guest-physical addresses: BAR0 + 0xc). */
const DOORBELL = 0x0c;
/** BAR0 is 256 bytes, 256-aligned. */
const BAR0_BYTES = 256;

/** The MSI-X interrupts the guest kernel took for the device at `address`, summed over its vectors and CPUs. */
export function kernelInterrupts(text: string, address: string): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.includes('vfio-msix') || !line.includes(address)) continue;
    for (const c of line.trim().split(/\s+/).slice(1)) {
      if (!/^\d+$/.test(c)) break;
      total += Number(c);
    }
  }
  return total;
}

/** Doorbell writes in trace lines: how many, and how many per destination peer (value >> 16). */
export interface DoorbellCount {
  writes: number;
  byDest: Record<number, number>;
}

const LINE = /memory_region_ops_write .*addr 0x([0-9a-f]+) value 0x([0-9a-f]+) size (\d+) name '([^']*)'/;

/** Adds the Doorbell writes of `lines` (whole lines of a `-trace memory_region_ops_write` log) to `into`. */
export function countDoorbellWrites(lines: readonly string[], into: DoorbellCount = { writes: 0, byDest: {} }): DoorbellCount {
  for (const line of lines) {
    if (!line.includes('ivshmem-mmio')) continue;
    const m = LINE.exec(line);
    if (m === null || m[4] !== 'ivshmem-mmio') continue;
    if (Number.parseInt(m[1]!, 16) % BAR0_BYTES !== DOORBELL) continue;
    const dest = Number.parseInt(m[2]!, 16) >>> 16;
    into.writes++;
    into.byDest[dest] = (into.byDest[dest] ?? 0) + 1;
  }
  return into;
}

/** Reads a growing trace file from where it left off; `read()` counts the Doorbell writes since the last call. */
export class TraceReader {
  readonly #fd: number;
  #offset = 0;
  #partial = '';
  readonly #buffer = Buffer.alloc(1 << 20);
  #closed = false;

  constructor(file: string) {
    this.#fd = openSync(file, 'r');
  }

  /** Doorbell writes in the lines written since the last read (a last line still being written waits for the next). */
  read(): DoorbellCount {
    if (this.#closed) throw new Error('TraceReader closed');
    const count: DoorbellCount = { writes: 0, byDest: {} };
    for (;;) {
      const n = readSync(this.#fd, this.#buffer, 0, this.#buffer.length, this.#offset);
      if (n === 0) break;
      this.#offset += n;
      const lines = (this.#partial + this.#buffer.toString('latin1', 0, n)).split('\n');
      this.#partial = lines.pop()!;
      countDoorbellWrites(lines, count);
    }
    return count;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeSync(this.#fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
