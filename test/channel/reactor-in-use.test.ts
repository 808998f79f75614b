/**
 * A peer's channels share one receive loop (the reactor). A channel on a peer that already runs
 * its own BitmaskDoorbell loop, or a reactor loop that fails, used to make the reactor restart
 * itself in a tight cycle of microtasks: the process froze and died when its heap ran out. Each
 * case runs in a child with a small heap, so that a regression fails fast instead of hanging.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { JsonChild, killAllChildren, type ChildMessage } from '../helpers/children.js';
import { FIXTURES, requireBuilt, uniqueSocketPath } from '../helpers/paths.js';

afterEach(async () => {
  await killAllChildren();
});

const IN_USE = { name: 'InUseError', code: 'ERR_IVSHMEM_IN_USE' };

async function run(mode: string): Promise<ChildMessage> {
  requireBuilt();
  const child = new JsonChild(
    process.execPath,
    ['--max-old-space-size=128', join(FIXTURES, 'channel', 'reactor-in-use.mjs'), JSON.stringify({ mode, socketPath: uniqueSocketPath('reactor') })],
    { name: `reactor-in-use ${mode}`, waitMs: 20_000 },
  );
  const result = await child.next('result');
  expect(await child.exit()).toEqual({ code: 0, signal: null });
  return result;
}

describe('a channel on a peer that runs its own receive loop', () => {
  it('is refused at construction with InUseError (both ends), and nothing spins', async () => {
    const r = await run('construct');
    expect(r.consumer).toMatchObject(IN_USE);
    expect(r.producer).toMatchObject(IN_USE);
    expect(r.loops).toBe(1); // the peer's own
  });

  it('a producer made before that loop: its wait for space rejects with InUseError, and works once the loop ended', async () => {
    const r = await run('wait');
    expect(r.refused).toMatchObject(IN_USE);
    expect(r.loopsAfter - r.loopsBefore).toBeLessThanOrEqual(1);
    expect(r.received).toBe(r.queued + 1);
  });
});

describe('a reactor loop that fails', () => {
  it('tells its sources once and does not restart by itself', async () => {
    const r = await run('fail');
    expect(r.failures).toEqual([{ name: 'Error', message: 'state() failed' }]);
    expect(r.loops).toBe(1);
    expect(r.states).toBe(1);
  });
});
