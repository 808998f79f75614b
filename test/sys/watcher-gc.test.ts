/**
 * A native Watcher's lifetime under GC, in forked children with --expose-gc: while open it holds
 * itself (as Node's HandleWrap does), so a started watcher nobody references keeps polling;
 * once closed it lets go, so it is collected like any object.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { killAllChildren } from '../helpers/children.js';
import { nodeChild } from './helpers.js';

afterEach(async () => {
  await killAllChildren();
});

describe('a native Watcher with no JS reference', () => {
  it('started, dropped and gc()ed: it is not collected, and a signal still reaches its callback', async () => {
    const child = nodeChild('watcher-gc.mjs', ['open'], { nodeArgs: ['--expose-gc'] });
    expect(await child.next('collected')).toMatchObject({ collected: false });
    expect(await child.next('callback')).toMatchObject({ callbacks: 1 });
    expect(await child.next('result')).toMatchObject({ callbacks: 1 });
    expect(await child.exit()).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
  });

  it('closed, then dropped: gc() collects it and no native resource is left', async () => {
    const child = nodeChild('watcher-gc.mjs', ['closed'], { nodeArgs: ['--expose-gc'] });
    const r = await child.next('collected');
    expect(r).toMatchObject({ collected: true });
    expect(r.liveAfter).toBe(r.liveBefore);
    expect(await child.next('result')).toMatchObject({ callbacks: 0 });
    expect(await child.exit()).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
  });
});
