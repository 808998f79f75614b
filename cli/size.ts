/**
 * Sizes as QEMU's ivshmem-server takes them: a whole number of bytes, or one with a K, M, G or
 * T suffix meaning a binary multiple (1K = 1024, 4M = 4194304). Case does not matter.
 * Fractions ("1.5M") are refused: a shared-memory size is a whole number of bytes, and QEMU
 * needs a power of two anyway.
 */
import { InvalidArgumentError } from 'commander';

const MULTIPLIERS: Readonly<Record<string, number>> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Bytes for `text`; RangeError saying what is accepted if it is not a size. */
export function parseSize(text: string): number {
  const match = /^(\d+)([kmgt]?)$/i.exec(text.trim());
  if (match === null) {
    throw new RangeError(
      `invalid size ${JSON.stringify(text)}: expected a whole number of bytes, optionally with a K, M or G suffix (binary: 1K = 1024), e.g. 4096, 64K, 4M`,
    );
  }
  const bytes = Number(match[1]) * MULTIPLIERS[match[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(bytes)) throw new RangeError(`invalid size ${JSON.stringify(text)}: too large`);
  return bytes;
}

/** The shortest exact spelling of `bytes` with a binary suffix: 4194304 → "4M", 5000 → "5000". */
export function formatSize(bytes: number): string {
  for (const [suffix, multiplier] of [['T', 2 ** 40], ['G', 2 ** 30], ['M', 2 ** 20], ['K', 2 ** 10]] as const) {
    if (bytes >= multiplier && bytes % multiplier === 0) return `${bytes / multiplier}${suffix}`;
  }
  return String(bytes);
}

/** A commander option parser for a size from `min` to `max` bytes. */
export function sizeArg(min: number, max: number): (value: string) => number {
  return (value) => {
    let bytes: number;
    try {
      bytes = parseSize(value);
    } catch {
      throw new InvalidArgumentError(
        'Expected a whole number of bytes, optionally with a K, M or G suffix (binary: 1K = 1024), e.g. 4096, 64K or 4M.',
      );
    }
    if (bytes < min || bytes > max) {
      throw new InvalidArgumentError(`The size must be from ${formatSize(min)} to ${formatSize(max)} bytes, got ${bytes}.`);
    }
    return bytes;
  };
}
