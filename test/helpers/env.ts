/**
 * The machine the tests run on: external tools on PATH (strace, QEMU) and whether this is CI,
 * where a missing tool fails instead of skipping.
 */
import { findOnPath } from '../../bench/vm/qemu-guest.js';

/** Finds an executable regular file called `name` on `PATH` (the bench's guest harness has the same need). */
export { findOnPath };

/** `CI` set and not ''/0/false/no. */
export function isCi(): boolean {
  const v = process.env.CI;
  if (v === undefined) return false;
  const t = v.trim().toLowerCase();
  return t !== '' && t !== '0' && t !== 'false' && t !== 'no';
}

/**
 * Why this machine cannot run a child as an unprivileged user under a limit of its own (the
 * tests of fd limits: Linux exempts root from the in-flight fd limit), or null if it can: that
 * needs root, and setpriv and prlimit on PATH. In CI a missing piece throws instead (see isCi).
 */
export function cannotRunUnprivileged(): string | null {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root (to start a child as uid 65534)');
  for (const tool of ['setpriv', 'prlimit']) if (findOnPath(tool) === null) missing.push(`${tool} on PATH (util-linux)`);
  if (missing.length === 0) return null;
  const why = `needs ${missing.join(', ')}`;
  if (isCi()) throw new Error(`fd-limit tests must run in CI (CI=${process.env.CI}): ${why}`);
  return `fd-limit test skipped: ${why}`;
}

/** A command prefix that runs what follows as uid/gid 65534 (nobody) with RLIMIT_NOFILE `nofile`. */
export function unprivileged(nofile: number): string[] {
  return ['prlimit', `--nofile=${nofile}:${nofile}`, '--', 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'];
}
