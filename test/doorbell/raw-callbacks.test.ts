/**
 * No C++ exception leaves a raw Node-API callback of the interrupt table: one that did would
 * unwind into V8 and end the process with std::terminate. Each call runs in a child, whose
 * system call fails while building the error throws (a hostile Error.prototype setter); the
 * bitmask ring and broadcast, which call the raw signal, take their bit back.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { JsonChild, killAllChildren } from '../helpers/children.js';

afterEach(async () => {
  await killAllChildren();
});

describe('a helper that throws inside a raw interrupt-table callback', () => {
  it.each(['ring', 'signal', 'broadcast', 'wake'])(
    '%s(): the process survives, the call throws the JS error, the bit is taken back',
    async (call) => {
      const child = JsonChild.fixture('doorbell/throwing-helper.mjs', { call }, `throwing-helper ${call}`);
      const exit = await child.exit();
      expect({ exit, stderr: child.stderr }).toEqual({ exit: { code: 0, signal: null }, stderr: '' });
      expect(child.messages).toEqual([{ type: 'result', call, threw: true, message: 'hostile setter', pending: 0, alive: true }]);
    },
  );
});
