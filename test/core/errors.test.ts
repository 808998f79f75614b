/**
 * Error codes are stable strings and typed: `switch (e.code)` narrows an IvshmemErrorType to its
 * class. The type-level half is checked by `tsc --noEmit` in pretest (a wrong narrowing fails
 * the build); the runtime half checks codes, names and guards.
 */
import { describe, expect, it } from 'vitest';
import {
  ClosedError,
  ErrorCodes,
  ProtocolError,
  TooLargeError,
  isIvshmemError,
  type IvshmemErrorType,
} from '../../lib/index.js';

/** What a program branching on codes writes; it must compile without casts. */
function describeError(e: IvshmemErrorType): string {
  switch (e.code) {
    case ErrorCodes.TOO_LARGE:
      return `too large: ${e.size} > ${e.limit}`; // narrowed: TooLargeError's fields
    case ErrorCodes.PROTOCOL:
      return `protocol: ${e.reason}`; // narrowed: ProtocolError's reason
    case ErrorCodes.PEER_LEFT:
      return `peer ${e.peer} left`;
    case ErrorCodes.CLOSED:
      // @ts-expect-error a ClosedError has no `limit`: the narrowing is real
      return `closed ${e.limit}`;
    default:
      return e.code;
  }
}

describe('error codes', () => {
  it('switch (e.code) narrows at run time too, and every class carries its own code', () => {
    expect(describeError(new TooLargeError(10, 5, 'x'))).toBe('too large: 10 > 5');
    expect(describeError(new ProtocolError('bad-version', 'x'))).toBe('protocol: bad-version');
    expect(new ClosedError('Peer').code).toBe('ERR_IVSHMEM_CLOSED');
  });

  it('isIvshmemError recognises ours (also across realms, by code) and nothing else', () => {
    const e: unknown = new TooLargeError(2, 1, 'x');
    expect(isIvshmemError(e)).toBe(true);
    if (isIvshmemError(e) && e.code === ErrorCodes.TOO_LARGE) expect(e.limit).toBe(1);
    const rebuilt = Object.assign(new Error('from a child'), { code: 'ERR_IVSHMEM_TIMEOUT' });
    expect(isIvshmemError(rebuilt)).toBe(true);
    expect(isIvshmemError(Object.assign(new Error('x'), { code: 'ENOENT' }))).toBe(false);
    expect(new Set(Object.values(ErrorCodes)).size).toBe(Object.values(ErrorCodes).length);
  });
});
