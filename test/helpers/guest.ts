/**
 * Test harness: boot a real Linux guest under QEMU and run a shell script in it. The harness
 * itself is the benchmark's (bench/vm/qemu-guest.ts: `ivshmem bench --vm` boots the same
 * machine); this adds the tests' rule that a guest test never skips in CI.
 */
import { isCi } from './env.js';
import { MISSING_TOOLS_FIX, missingGuestTools } from '../../bench/vm/qemu-guest.js';

export { bootGuest, EXIT_MARKER, Guest, GUEST_RESULTS, guestAssets, qemuArgs, START_MARKER } from '../../bench/vm/qemu-guest.js';
export type { GuestAssets, GuestOptions, GuestResult } from '../../bench/vm/qemu-guest.js';

/**
 * Why guest tests cannot run here, or null. In CI (see isCi) a missing tool throws instead:
 * the guest tests must not skip there.
 */
export function guestUnavailable(): string | null {
  const missing = missingGuestTools();
  if (missing.length === 0) return null;
  const why = `guest tests: ${missing.join(', ')} not on PATH; ${MISSING_TOOLS_FIX}`;
  if (isCi()) throw new Error(`${why} (required in CI, CI=${process.env.CI})`);
  return `${why}: skipped`;
}
