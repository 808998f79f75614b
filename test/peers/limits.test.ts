/**
 * PeerServer against clients that hold on to what they are sent (issue 9, item 3):
 *
 * - Linux counts fds in flight in UNIX sockets against the sending user's RLIMIT_NOFILE
 *   (ETOOMANYREFS beyond it), root exempt: those tests run as uid 65534 under prlimit.
 *
 * Servers under a limit run in children (test/fixtures/server.mjs), so that it is theirs alone.
 */
import { chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { JsonChild, killAllChildren } from '../helpers/children.js';
import { cannotRunUnprivileged, unprivileged } from '../helpers/env.js';
import { removeDir } from '../helpers/paths.js';

const dirs: string[] = [];

afterEach(async () => {
  await killAllChildren();
  for (const d of dirs.splice(0)) removeDir(d);
});

const skipUnprivileged = cannotRunUnprivileged();

/** A temp dir that uid 65534 may create its socket in. */
function sharedDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ivt-limits-'));
  chmodSync(dir, 0o777);
  dirs.push(dir);
  return dir;
}

describe('fds held unread by clients', () => {
  it.skipIf(skipUnprivileged !== null)('an errno libuv has no name for is named as glibc names it: ETOOMANYREFS from sendmsg', async () => {
    // Before: code 'Unknown system error -109', message "Unknown system error -109: Unknown system error -109, sendmsg".
    const socketPath = join(sharedDir(), 'refs.sock');
    const child = JsonChild.fixture('peers/too-many-refs.mjs', { socketPath }, 'too-many-refs (uid 65534, nofile 64)', {
      prefix: unprivileged(64),
    });
    const result = await child.waitFor((m) => m.type === 'refused' || m.type === 'not-refused' || m.type === 'fatal', 'the fixture to report');
    expect(result.type, JSON.stringify(result)).toBe('refused');
    expect(result.sent).toBeGreaterThanOrEqual(64);
    expect(result.error).toMatchObject({ name: 'Error', code: 'ETOOMANYREFS', errno: -109, syscall: 'sendmsg' });
    expect((result.error as { message: string }).message).toMatch(/^ETOOMANYREFS: too many references: cannot splice, sendmsg \(fd \d+\)$/);
  });

  if (skipUnprivileged !== null) {
    it('fd-limit tests need root, setpriv and prlimit', (ctx) => {
      ctx.skip(skipUnprivileged);
    });
  }
});
