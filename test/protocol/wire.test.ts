import { inspect, isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ProtocolError, isProtocolError, type ProtocolErrorReason } from '../../lib/core/errors.js';
import {
  ClientDecoder,
  DEFAULT_MAX_VECTORS,
  MAX_PEER_ID,
  MAX_VECTORS_LIMIT,
  MESSAGE_SIZE,
  PROTOCOL_VERSION,
  SHM_MESSAGE,
  decodeMessage,
  encodeMessage,
  greeting,
  leave,
  peerVectors,
  type ClientEvent,
} from '../../lib/protocol/wire.js';

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

const hex = (bytes: Uint8Array): string =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, '0').toUpperCase()).join(' ');

/** Runs `fn`, which must throw a ProtocolError; returns it. */
function protocolError(fn: () => unknown): ProtocolError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ProtocolError);
    expect(isProtocolError(error)).toBe(true);
    return error as ProtocolError;
  }
  throw new Error('expected a ProtocolError, nothing was thrown');
}

/** A message as fed to a decoder: value and fd (null = none). */
type In = readonly [bigint, string | null];

/** Feeds messages; every one must succeed. Returns the non-null events. */
function feed(decoder: ClientDecoder<string>, messages: readonly In[]): ClientEvent<string>[] {
  const events: ClientEvent<string>[] = [];
  for (const [value, fd] of messages) {
    const event = decoder.push(value, fd);
    if (event !== null) events.push(event);
  }
  return events;
}

/** The handshake for own ID `id`. */
const hello = (id: number, shm = 'shm'): In[] => [
  [0n, null],
  [BigInt(id), null],
  [-1n, shm],
];

describe('constants', () => {
  it('match the contrib ivshmem-server', () => {
    expect(PROTOCOL_VERSION).toBe(0);
    expect(SHM_MESSAGE).toBe(-1);
    expect(MAX_PEER_ID).toBe(65535);
    expect(DEFAULT_MAX_VECTORS).toBe(64);
    expect(MESSAGE_SIZE).toBe(8);
    expect(MAX_VECTORS_LIMIT).toBe(1024);
  });
});

describe('encodeMessage / decodeMessage', () => {
  it('produces the byte examples of docs/protocol.md (framing)', () => {
    expect(hex(encodeMessage(0))).toBe('00 00 00 00 00 00 00 00'); // version 0
    expect(hex(encodeMessage(1))).toBe('01 00 00 00 00 00 00 00'); // ID 1
    expect(hex(encodeMessage(-1))).toBe('FF FF FF FF FF FF FF FF'); // shm
    expect(hex(encodeMessage(2))).toBe('02 00 00 00 00 00 00 00'); // peer 2
    expect(hex(encodeMessage(0n))).toBe('00 00 00 00 00 00 00 00');
    expect(hex(encodeMessage(-1n))).toBe('FF FF FF FF FF FF FF FF');
    expect(hex(encodeMessage(65535))).toBe('FF FF 00 00 00 00 00 00');
    expect(hex(encodeMessage(0x0102030405060708n))).toBe('08 07 06 05 04 03 02 01');
  });

  it('decodes the framing byte examples', () => {
    expect(decodeMessage(new Uint8Array(8))).toBe(0n);
    expect(decodeMessage(new Uint8Array(8).fill(0xff))).toBe(-1n);
    expect(decodeMessage(Uint8Array.of(2, 0, 0, 0, 0, 0, 0, 0))).toBe(2n);
    expect(decodeMessage(Uint8Array.of(0xff, 0xff, 0, 0, 0, 0, 0, 0))).toBe(65535n);
  });

  it('encodes and decodes the int64 bounds exactly', () => {
    expect(hex(encodeMessage(INT64_MAX))).toBe('FF FF FF FF FF FF FF 7F');
    expect(hex(encodeMessage(INT64_MIN))).toBe('00 00 00 00 00 00 00 80');
    expect(decodeMessage(encodeMessage(INT64_MAX))).toBe(INT64_MAX);
    expect(decodeMessage(encodeMessage(INT64_MIN))).toBe(INT64_MIN);
    expect(() => encodeMessage(INT64_MAX + 1n)).toThrow(RangeError);
    expect(() => encodeMessage(INT64_MIN - 1n)).toThrow(RangeError);
    expect(() => encodeMessage(2n ** 64n)).toThrow(/outside the int64 range/);
    expect(() => encodeMessage(2 ** 63)).toThrow(RangeError);
    expect(() => encodeMessage(1e300)).toThrow(RangeError);
    // -2**63 is exactly representable as a double, so it is accepted
    expect(decodeMessage(encodeMessage(-(2 ** 63)))).toBe(INT64_MIN);
  });

  it('round-trips values around every boundary', () => {
    const values = [
      0n, 1n, -1n, -2n, 65535n, 65536n, 2n ** 31n, -(2n ** 31n), 2n ** 32n, 2n ** 53n + 1n,
      -(2n ** 53n) - 1n, INT64_MAX, INT64_MIN, INT64_MAX - 1n, INT64_MIN + 1n,
    ];
    for (const v of values) {
      expect(decodeMessage(encodeMessage(v))).toBe(v);
    }
    for (const n of [0, 1, -1, 65535, 65536, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]) {
      expect(encodeMessage(n)).toEqual(encodeMessage(BigInt(n)));
      expect(decodeMessage(encodeMessage(n))).toBe(BigInt(n));
    }
    expect(encodeMessage(-0)).toEqual(encodeMessage(0));
  });

  it('round-trips 10,000 random int64 values', () => {
    const rng = mulberry32(0xc0ffee);
    for (let i = 0; i < 10_000; i++) {
      const v = randomInt64(rng);
      expect(decodeMessage(encodeMessage(v)), `value ${v}`).toBe(v);
    }
  });

  it('rejects non-integer and wrongly typed values with TypeError', () => {
    for (const bad of [1.5, -0.5, Number.NaN, Infinity, -Infinity]) {
      expect(() => encodeMessage(bad), String(bad)).toThrow(TypeError);
    }
    for (const bad of ['1', null, undefined, {}, [1], true]) {
      expect(() => encodeMessage(bad as never), String(bad)).toThrow(TypeError);
    }
    expect(() => encodeMessage(1.5)).toThrow(/1\.5/);
  });

  it('decodes only exactly 8 bytes', () => {
    for (const length of [0, 1, 7, 9, 16]) {
      expect(() => decodeMessage(new Uint8Array(length)), `length ${length}`).toThrow(RangeError);
    }
    expect(() => decodeMessage(new Uint8Array(7))).toThrow(/got 7/);
    expect(() => decodeMessage([0, 0, 0, 0, 0, 0, 0, 0] as never)).toThrow(TypeError);
    expect(() => decodeMessage(new ArrayBuffer(8) as never)).toThrow(TypeError);
    expect(() => decodeMessage(null as never)).toThrow(TypeError);
    expect(() => decodeMessage(new Uint16Array(4) as never)).toThrow(TypeError);
  });

  it('honours the byteOffset of views and Buffers', () => {
    const backing = new Uint8Array(24).fill(0xee);
    backing.set(encodeMessage(-1), 8);
    backing.set(encodeMessage(4242), 16);
    expect(decodeMessage(backing.subarray(8, 16))).toBe(-1n);
    expect(decodeMessage(backing.subarray(16, 24))).toBe(4242n);
    const buffer = Buffer.concat([Buffer.from([9, 9, 9]), Buffer.from(encodeMessage(7))]);
    expect(decodeMessage(buffer.subarray(3))).toBe(7n);
  });
});

describe('server message builders', () => {
  it('greeting() is version 0, the ID, then -1 with the shm fd (the connect sequence, steps 1-3)', () => {
    const shm = { fd: 10 };
    const messages = greeting(3, shm);
    expect(messages).toStrictEqual([{ value: 0 }, { value: 3 }, { value: -1, fd: shm }]);
    expect(messages[2]?.fd).toBe(shm); // the very object, not a copy
    expect(messages.map((m) => hex(encodeMessage(m.value)))).toEqual([
      '00 00 00 00 00 00 00 00',
      '03 00 00 00 00 00 00 00',
      'FF FF FF FF FF FF FF FF',
    ]);
    expect(greeting(0, 5)).toStrictEqual([{ value: 0 }, { value: 0 }, { value: -1, fd: 5 }]);
    expect(greeting(65535, 5)[1]).toStrictEqual({ value: 65535 });
  });

  it('peerVectors() sends one message per vector, in vector order', () => {
    expect(peerVectors(2, [7, 8, 9])).toStrictEqual([
      { value: 2, fd: 7 },
      { value: 2, fd: 8 },
      { value: 2, fd: 9 },
    ]);
    expect(peerVectors(0, ['a'])).toStrictEqual([{ value: 0, fd: 'a' }]);
  });

  it('leave() is the ID without an fd (a leave)', () => {
    const message = leave(2);
    expect(message).toStrictEqual({ value: 2 });
    expect('fd' in message).toBe(false);
    expect(hex(encodeMessage(message.value))).toBe('02 00 00 00 00 00 00 00');
  });

  it('compose the connect sequence, which a ClientDecoder accepts', () => {
    // New client 2 joins; peers 0 and 1 are connected (in that order); 2 vectors each.
    const existing = new Map([
      [0, ['p0v0', 'p0v1']],
      [1, ['p1v0', 'p1v1']],
    ]);
    const own = ['own0', 'own1'];
    const wire = [
      ...greeting(2, 'shm'),
      ...[...existing].flatMap(([id, fds]) => peerVectors(id, fds)),
      ...peerVectors(2, own),
    ];
    expect(wire).toStrictEqual([
      { value: 0 },
      { value: 2 },
      { value: -1, fd: 'shm' },
      { value: 0, fd: 'p0v0' },
      { value: 0, fd: 'p0v1' },
      { value: 1, fd: 'p1v0' },
      { value: 1, fd: 'p1v1' },
      { value: 2, fd: 'own0' },
      { value: 2, fd: 'own1' },
    ]);

    const decoder = new ClientDecoder<string>();
    // Through the real byte encoding, as a socket would carry it.
    const events = wire
      .map((m) => decoder.push(decodeMessage(encodeMessage(m.value)), m.fd ?? null))
      .filter((e) => e !== null);
    expect(events).toStrictEqual([
      { type: 'hello', id: 2, shm: 'shm' },
      { type: 'vector', peer: 0, vector: 0, fd: 'p0v0', own: false },
      { type: 'vector', peer: 0, vector: 1, fd: 'p0v1', own: false },
      { type: 'vector', peer: 1, vector: 0, fd: 'p1v0', own: false },
      { type: 'vector', peer: 1, vector: 1, fd: 'p1v1', own: false },
      { type: 'vector', peer: 2, vector: 0, fd: 'own0', own: true },
      { type: 'vector', peer: 2, vector: 1, fd: 'own1', own: true },
    ]);
    expect(decoder.peers()).toEqual([0, 1]);
    expect(decoder.ownVectors).toBe(2);
    // A later disconnect as built by leave()
    expect(decoder.push(BigInt(leave(1).value), null)).toStrictEqual({
      type: 'peer-left',
      peer: 1,
      vectors: 2,
    });
  });

  it('validate IDs and fds', () => {
    for (const bad of [-1, 65536, 1.5, Number.NaN, Infinity, '1' as never]) {
      expect(() => greeting(bad, 3), String(bad)).toThrow(RangeError);
      expect(() => peerVectors(bad, [3]), String(bad)).toThrow(RangeError);
      expect(() => leave(bad), String(bad)).toThrow(RangeError);
    }
    expect(() => leave(65536)).toThrow(/65536/);
    expect(() => peerVectors(1, [])).toThrow(RangeError);
    expect(() => greeting(1, null)).toThrow(TypeError);
    expect(() => greeting(1, undefined)).toThrow(TypeError);
    expect(() => peerVectors(1, [3, null])).toThrow(/vector 1/);
  });
});

describe('ClientDecoder: a valid stream', () => {
  it('decodes greeting, existing peers, own vectors, a join, a leave and a rejoin', () => {
    const decoder = new ClientDecoder<string>();
    expect(decoder.id).toBeNull();
    expect(decoder.helloDone).toBe(false);
    expect(decoder.failed).toBe(false);

    const vectors = (id: number, tag: string): In[] =>
      [0, 1, 2].map((v) => [BigInt(id), `${tag}v${v}`] as const);

    expect(decoder.push(0n, null)).toBeNull();
    expect(decoder.push(4n, null)).toBeNull();
    expect(decoder.id).toBe(4);
    expect(decoder.helloDone).toBe(false);

    const events = feed(decoder, [
      [-1n, 'shm'],
      ...vectors(1, 'p1'), // existing peers, in connect order
      ...vectors(3, 'p3'),
      ...vectors(4, 'own'), // own interrupt fds
      ...vectors(7, 'p7'), // a new peer joins
      [3n, null], // peer 3 leaves
      ...vectors(3, 'p3again'), // and its ID comes back
    ]);

    const vector = (peer: number, v: number, fd: string, own = false) =>
      ({ type: 'vector', peer, vector: v, fd, own }) as const;
    expect(events).toStrictEqual([
      { type: 'hello', id: 4, shm: 'shm' },
      vector(1, 0, 'p1v0'),
      vector(1, 1, 'p1v1'),
      vector(1, 2, 'p1v2'),
      vector(3, 0, 'p3v0'),
      vector(3, 1, 'p3v1'),
      vector(3, 2, 'p3v2'),
      vector(4, 0, 'ownv0', true),
      vector(4, 1, 'ownv1', true),
      vector(4, 2, 'ownv2', true),
      vector(7, 0, 'p7v0'),
      vector(7, 1, 'p7v1'),
      vector(7, 2, 'p7v2'),
      { type: 'peer-left', peer: 3, vectors: 3 },
      vector(3, 0, 'p3againv0'), // vector numbering restarted
      vector(3, 1, 'p3againv1'),
      vector(3, 2, 'p3againv2'),
    ]);

    expect(decoder.helloDone).toBe(true);
    expect(decoder.ownVectors).toBe(3);
    expect(decoder.vectorsOf(4)).toBe(3); // own ID reports ownVectors
    expect(decoder.peers()).toEqual([1, 7, 3]); // 3 left and came back: listed last
    expect([1, 3, 7].map((p) => decoder.vectorsOf(p))).toEqual([3, 3, 3]);
    expect(decoder.vectorsOf(0)).toBe(0);
    expect(decoder.vectorsOf(65535)).toBe(0);
    // The server going away after the handshake is a normal end.
    expect(() => decoder.end()).not.toThrow();
    expect(() => decoder.end(0)).not.toThrow(); // idempotent
    expect(decoder.failed).toBe(false);
  });

  it('tracks counts through partial leaves and peers with fewer vectors', () => {
    const decoder = new ClientDecoder<string>({ maxVectors: 2 });
    feed(decoder, [...hello(0), [5n, 'a'], [6n, 'b'], [6n, 'c']]);
    expect(decoder.peers()).toEqual([5, 6]);
    expect(decoder.vectorsOf(5)).toBe(1);
    expect(decoder.vectorsOf(6)).toBe(2);
    expect(decoder.push(5n, null)).toStrictEqual({ type: 'peer-left', peer: 5, vectors: 1 });
    expect(decoder.peers()).toEqual([6]);
    expect(decoder.vectorsOf(5)).toBe(0);
    // After the leave, 5 may receive maxVectors fresh fds again.
    feed(decoder, [
      [5n, 'd'],
      [5n, 'e'],
    ]);
    expect(decoder.vectorsOf(5)).toBe(2);
    expect(decoder.ownVectors).toBe(0);
  });

  it('accepts the extreme IDs 0 and 65535 and peers before own vectors', () => {
    const decoder = new ClientDecoder<number>({ maxVectors: 1 });
    expect(decoder.push(0n, null)).toBeNull();
    expect(decoder.push(65535n, null)).toBeNull();
    expect(decoder.push(-1n, 100)).toStrictEqual({ type: 'hello', id: 65535, shm: 100 });
    expect(decoder.push(0n, 101)).toStrictEqual({
      type: 'vector',
      peer: 0,
      vector: 0,
      fd: 101,
      own: false,
    });
    expect(decoder.push(65535n, 102)).toStrictEqual({
      type: 'vector',
      peer: 65535,
      vector: 0,
      fd: 102,
      own: true,
    });
    expect(decoder.push(0n, null)).toStrictEqual({ type: 'peer-left', peer: 0, vectors: 1 });
  });

  it('treats fd 0 as an fd (only null means none)', () => {
    const decoder = new ClientDecoder<number>();
    decoder.push(0n, null);
    decoder.push(1n, null);
    expect(decoder.push(-1n, 0)).toStrictEqual({ type: 'hello', id: 1, shm: 0 });
  });
});

describe('ClientDecoder: malformed streams', () => {
  interface Case {
    name: string;
    messages: In[];
    reason: ProtocolErrorReason;
    /** Text the error message must contain (the offending value). */
    mentions?: string;
    maxVectors?: number;
  }
  const huge = 2n ** 63n - 1n;
  const cases: Case[] = [
    { name: 'wrong version', messages: [[1n, null]], reason: 'bad-version', mentions: 'version 1' },
    { name: 'version -1', messages: [[-1n, 'x']], reason: 'bad-version', mentions: '-1' },
    {
      name: 'version int64 max',
      messages: [[huge, null]],
      reason: 'bad-version',
      mentions: huge.toString(),
    },
    {
      name: 'version 2^53+1 (no precision loss)',
      messages: [[2n ** 53n + 1n, null]],
      reason: 'bad-version',
      mentions: '9007199254740993',
    },
    { name: 'fd on the version', messages: [[0n, 'x']], reason: 'unexpected-fd' },
    {
      name: 'fd on the own ID',
      messages: [
        [0n, null],
        [3n, 'x'],
      ],
      reason: 'unexpected-fd',
      mentions: '3',
    },
    {
      name: 'own ID -1 (shm sent instead of the ID)',
      messages: [
        [0n, null],
        [-1n, 'shm'],
      ],
      reason: 'bad-id',
      mentions: '-1',
    },
    {
      name: 'own ID -1 without fd',
      messages: [
        [0n, null],
        [-1n, null],
      ],
      reason: 'bad-id',
    },
    {
      name: 'own ID 65536',
      messages: [
        [0n, null],
        [65536n, null],
      ],
      reason: 'out-of-range',
      mentions: '65536',
    },
    {
      name: 'own ID -2',
      messages: [
        [0n, null],
        [-2n, null],
      ],
      reason: 'out-of-range',
      mentions: '-2',
    },
    {
      name: 'own ID int64 min',
      messages: [
        [0n, null],
        [INT64_MIN, 'x'],
      ],
      reason: 'out-of-range',
      mentions: INT64_MIN.toString(),
    },
    {
      name: 'shm without fd',
      messages: [
        [0n, null],
        [1n, null],
        [-1n, null],
      ],
      reason: 'missing-shm',
      mentions: '-1',
    },
    {
      name: 'peer vector instead of shm',
      messages: [
        [0n, null],
        [1n, null],
        [5n, 'x'],
      ],
      reason: 'missing-shm',
      mentions: '5',
    },
    {
      name: 'leave instead of shm',
      messages: [
        [0n, null],
        [1n, null],
        [1n, null],
      ],
      reason: 'missing-shm',
    },
    {
      name: 'out-of-range instead of shm',
      messages: [
        [0n, null],
        [1n, null],
        [65536n, 'x'],
      ],
      reason: 'out-of-range',
      mentions: '65536',
    },
    {
      name: 'shm twice',
      messages: [...hello(1), [-1n, 'shm2']],
      reason: 'duplicate-shm',
      mentions: '-1',
    },
    {
      name: 'shm again without fd, after vectors',
      messages: [...hello(1), [1n, 'own0'], [0n, 'p0'], [-1n, null]],
      reason: 'duplicate-shm',
    },
    {
      name: 'leave for a never-seen peer',
      messages: [...hello(1), [9n, null]],
      reason: 'unknown-peer',
      mentions: '9',
    },
    {
      name: 'leave twice',
      messages: [...hello(1), [9n, 'a'], [9n, null], [9n, null]],
      reason: 'unknown-peer',
      mentions: '9',
    },
    {
      name: 'self leave',
      messages: [...hello(1), [1n, null]],
      reason: 'self-leave',
      mentions: '1',
    },
    {
      name: 'self leave with own vectors',
      messages: [...hello(6), [6n, 'own0'], [6n, null]],
      reason: 'self-leave',
      mentions: '6',
    },
    ...(
      [
        [-2n, null],
        [-2n, 'x'],
        [65536n, null],
        [65536n, 'x'],
        [INT64_MAX, null],
        [INT64_MIN, 'x'],
        [2n ** 53n + 1n, 'x'],
        [-(2n ** 53n) - 1n, null],
        [2n ** 32n, null],
      ] as In[]
    ).map(
      ([value, fd]): Case => ({
        name: `after hello: ${value}${fd === null ? '' : ' + fd'}`,
        messages: [...hello(1), [0n, 'p0'], [value, fd]],
        reason: 'out-of-range',
        mentions: value.toString(),
      }),
    ),
    {
      name: 'too many vectors for a peer',
      maxVectors: 2,
      messages: [...hello(1), [3n, 'a'], [3n, 'b'], [3n, 'c']],
      reason: 'too-many-vectors',
      mentions: '3',
    },
    {
      name: 'too many own vectors',
      maxVectors: 1,
      messages: [...hello(1), [1n, 'a'], [1n, 'b']],
      reason: 'too-many-vectors',
      mentions: 'own ID 1',
    },
    {
      name: 'vector 65 with the default limit',
      messages: [
        ...hello(1),
        ...Array.from({ length: 65 }, (_, i): In => [2n, `v${i}`]),
      ],
      reason: 'too-many-vectors',
      mentions: '64',
    },
  ];

  it.each(cases)('$name → $reason', ({ messages, reason, mentions, maxVectors }) => {
    const decoder = new ClientDecoder<string>(maxVectors === undefined ? {} : { maxVectors });
    const last = messages.at(-1) as In;
    feed(decoder, messages.slice(0, -1)); // the prefix must be accepted
    const error = protocolError(() => decoder.push(...last));
    expect(error.reason).toBe(reason);
    expect(error.code).toBe('ERR_IVSHMEM_PROTOCOL');
    if (mentions !== undefined) expect(error.message).toContain(mentions);
    expect(decoder.failed).toBe(true);
    // Failed for good: even a message that would have been valid is refused now.
    const again = protocolError(() => decoder.push(0n, null));
    expect(again.reason).toBe('after-error');
    expect(again.cause).toBe(error);
    expect(protocolError(() => decoder.end()).reason).toBe('after-error');
  });

  it('truncated: end() with partial message bytes, before or after the handshake', () => {
    for (const prefix of [[], hello(1).slice(0, 2), hello(1), [...hello(1), [2n, 'a'] as In]]) {
      for (const partial of [1, 4, 7]) {
        const decoder = new ClientDecoder<string>();
        feed(decoder, prefix);
        const error = protocolError(() => decoder.end(partial));
        expect(error.reason).toBe('truncated');
        expect(error.message).toContain(`${partial} of 8`);
        expect(decoder.failed).toBe(true);
      }
    }
  });

  it('incomplete: end() before the hello', () => {
    for (const [count, missing] of [
      [0, 'no version'],
      [1, 'no own ID'],
      [2, 'no shared memory'],
    ] as const) {
      const decoder = new ClientDecoder<string>();
      feed(decoder, hello(1).slice(0, count));
      const error = protocolError(() => decoder.end());
      expect(error.reason).toBe('incomplete');
      expect(error.message).toContain(missing);
      expect(protocolError(() => decoder.push(0n, null)).reason).toBe('after-error');
    }
  });

  it('after an error every push throws after-error, whatever it carries', () => {
    const decoder = new ClientDecoder<string>();
    feed(decoder, hello(1));
    expect(protocolError(() => decoder.push(1n, null)).reason).toBe('self-leave');
    for (const [value, fd] of [
      [0n, 'x'],
      [2n, 'y'],
      [-1n, 'z'],
      [INT64_MAX, null],
      [2n, null],
    ] as In[]) {
      const error = protocolError(() => decoder.push(value, fd));
      expect(error.reason).toBe('after-error');
      expect(error.message).toContain('our own ID 1'); // names the original failure
    }
    // State stays as it was before the failing message.
    expect(decoder.id).toBe(1);
    expect(decoder.helloDone).toBe(true);
  });

  it('a failed push leaves counts unchanged (the fd was not taken)', () => {
    const decoder = new ClientDecoder<string>({ maxVectors: 1 });
    feed(decoder, [...hello(1), [2n, 'a']]);
    expect(protocolError(() => decoder.push(2n, 'b')).reason).toBe('too-many-vectors');
    expect(decoder.vectorsOf(2)).toBe(1);
    expect(decoder.peers()).toEqual([2]);
  });
});

describe('ClientDecoder: API misuse', () => {
  it('validates maxVectors', () => {
    for (const bad of [0, -1, 1025, 1.5, Number.NaN, Infinity]) {
      expect(() => new ClientDecoder({ maxVectors: bad }), String(bad)).toThrow(RangeError);
    }
    expect(() => new ClientDecoder({ maxVectors: 0 })).toThrow(/got 0/);
    expect(() => new ClientDecoder({ maxVectors: 1 })).not.toThrow();
    expect(() => new ClientDecoder({ maxVectors: 1024 })).not.toThrow();
    expect(() => new ClientDecoder({})).not.toThrow();
  });

  it('rejects a non-bigint value with TypeError without failing the stream', () => {
    const decoder = new ClientDecoder<number>();
    expect(() => decoder.push(0 as never, null)).toThrow(TypeError);
    expect(decoder.failed).toBe(false);
    expect(decoder.push(0n, null)).toBeNull();
  });

  it('validates end() partialBytes', () => {
    const decoder = new ClientDecoder<number>();
    for (const bad of [-1, 8, 1.5, Number.NaN]) {
      expect(() => decoder.end(bad), String(bad)).toThrow(RangeError);
    }
    expect(decoder.failed).toBe(false);
  });

  it('refuses push() after a clean end()', () => {
    const decoder = new ClientDecoder<string>();
    feed(decoder, hello(1));
    decoder.end();
    expect(() => decoder.push(2n, 'a')).toThrow(/after end/);
    expect(decoder.failed).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// Property test: random streams against an independent model of the rules.

/** mulberry32: tiny seeded PRNG, returns uint32. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function randomInt64(rng: () => number): bigint {
  return BigInt.asIntN(64, (BigInt(rng()) << 32n) | BigInt(rng()));
}

interface Model {
  phase: 'version' | 'id' | 'shm' | 'running' | 'failed';
  id: number | null;
  own: number;
  peers: Map<number, number>;
  max: number;
  helloDone: boolean;
}

type Expected =
  | { kind: 'throw'; reason: ProtocolErrorReason }
  | { kind: 'ok'; event: ClientEvent<number> | null };

/** What the rules say `push(value, fd)` must do; updates the model accordingly. */
function expectedPush(m: Model, value: bigint, fd: number | null): Expected {
  const fail = (reason: ProtocolErrorReason): Expected => {
    m.phase = 'failed';
    return { kind: 'throw', reason };
  };
  const ok = (event: ClientEvent<number> | null): Expected => ({ kind: 'ok', event });
  if (m.phase === 'failed') return fail('after-error');
  if (m.phase === 'version') {
    if (value !== 0n) return fail('bad-version');
    if (fd !== null) return fail('unexpected-fd');
    m.phase = 'id';
    return ok(null);
  }
  if (value < -1n || value > 65535n) return fail('out-of-range');
  const n = Number(value);
  if (m.phase === 'id') {
    if (n === -1) return fail('bad-id');
    if (fd !== null) return fail('unexpected-fd');
    m.id = n;
    m.phase = 'shm';
    return ok(null);
  }
  if (m.phase === 'shm') {
    if (n !== -1 || fd === null) return fail('missing-shm');
    m.phase = 'running';
    m.helloDone = true;
    return ok({ type: 'hello', id: m.id as number, shm: fd });
  }
  if (n === -1) return fail('duplicate-shm');
  const own = n === m.id;
  if (fd !== null) {
    const have = own ? m.own : (m.peers.get(n) ?? 0);
    if (have >= m.max) return fail('too-many-vectors');
    if (own) m.own++;
    else m.peers.set(n, have + 1);
    return ok({ type: 'vector', peer: n, vector: have, fd, own });
  }
  if (own) return fail('self-leave');
  const had = m.peers.get(n);
  if (had === undefined) return fail('unknown-peer');
  m.peers.delete(n);
  return ok({ type: 'peer-left', peer: n, vectors: had });
}

const EDGE_VALUES = [
  -2n, 65536n, INT64_MIN, INT64_MAX, 2n ** 53n + 1n, -(2n ** 53n) - 1n, 2n ** 32n, -65535n,
  65535n, 0n, -1n, 1n, 2n ** 16n + 1n,
];

/** Runs `fn`; returns what it threw, or undefined. */
function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error ?? new Error(`threw ${String(error)}`);
  }
  return undefined;
}

describe('ClientDecoder: property test', () => {
  const STREAMS = 20_000;
  const BASE_SEED = Number(process.env.PROTOCOL_FUZZ_SEED ?? 0x5eed1);

  it(`${STREAMS} random streams obey the rules (seed ${BASE_SEED}, env PROTOCOL_FUZZ_SEED)`, () => {
    const seen = new Map<string, number>();
    const bump = (key: string) => seen.set(key, (seen.get(key) ?? 0) + 1);
    let fdsPushed = 0;
    let fdsReturned = 0;
    let fdsRefused = 0;
    let nextFd = 1000;

    for (let stream = 0; stream < STREAMS; stream++) {
      const streamSeed = (BASE_SEED + stream) >>> 0;
      const rng = mulberry32(streamSeed);
      const pick = <T>(items: readonly T[]): T => items[rng() % items.length] as T;
      const chance = (percent: number) => rng() % 100 < percent;

      const max = pick([1, 2, 3, 3, 4, DEFAULT_MAX_VECTORS]);
      const decoder = new ClientDecoder<number>({ maxVectors: max });
      const model: Model = {
        phase: 'version',
        id: null,
        own: 0,
        peers: new Map(),
        max,
        helloDone: false,
      };
      const returned = new Set<number>(); // fds given back in events (each must be fresh)
      const log: string[] = [];
      const fail = (what: string): never => {
        throw new Error(
          `${what}\n  reproduce: PROTOCOL_FUZZ_SEED=${BASE_SEED} ` +
            `(stream ${stream}, stream seed ${streamSeed}, maxVectors ${max})\n` +
            `  pushed: ${log.join(', ')}`,
        );
      };
      const checkReason = (error: unknown, want: ProtocolErrorReason, what: string) => {
        if (!(error instanceof ProtocolError)) fail(`${what} threw ${inspect(error)}, not a ProtocolError`);
        const { reason, message } = error as ProtocolError;
        if (reason !== want) fail(`${what} threw ${reason} (${message}), expected ${want}`);
        bump(reason);
      };

      /** A message a correct server could send now (IDs from a small pool so they collide). */
      const plausible = (): [bigint, boolean] => {
        switch (model.phase) {
          case 'version':
            return [0n, false];
          case 'id':
            return [BigInt(rng() % 6), false];
          case 'shm':
            return [-1n, true];
          default: {
            const known = [...model.peers.keys()];
            if (known.length > 0 && chance(25)) return [BigInt(pick(known)), false];
            return [BigInt(chance(30) && model.id !== null ? model.id : rng() % 6), true];
          }
        }
      };
      const message = (): [bigint, boolean] => {
        const r = rng() % 100;
        if (r < 80) return plausible();
        if (r < 88) return [pick(EDGE_VALUES), chance(50)];
        if (r < 93) return [randomInt64(rng), chance(50)];
        return [BigInt((rng() % 9) - 1), chance(50)]; // -1..7, fd or not
      };
      const nextMessage = (): [bigint, number | null] => {
        const [value, withFd] = message();
        const fd = withFd ? nextFd++ : null;
        log.push(fd === null ? `${value}` : `${value}+fd${fd}`);
        if (fd !== null) fdsPushed++;
        return [value, fd];
      };

      const length = 1 + (rng() % 40);
      for (let step = 0; step < length && !decoder.failed; step++) {
        const [value, fd] = nextMessage();
        const expected = expectedPush(model, value, fd);
        let event: ClientEvent<number> | null = null;
        const error = thrownBy(() => (event = decoder.push(value, fd)));

        if (error !== undefined) {
          if (expected.kind === 'ok') fail(`push threw ${inspect(error)}, expected ${inspect(expected.event)}`);
          checkReason(error, (expected as { reason: ProtocolErrorReason }).reason, 'push');
          if (!decoder.failed) fail('decoder not marked failed after a throw');
          if (fd !== null) fdsRefused++; // not consumed: the caller closes it
        } else {
          if (expected.kind === 'throw') fail(`push returned ${inspect(event)}, expected ${expected.reason}`);
          const want = (expected as { event: ClientEvent<number> | null }).event;
          if (!isDeepStrictEqual(event, want)) fail(`push returned ${inspect(event)}, expected ${inspect(want)}`);
          const got = event as ClientEvent<number> | null;
          bump(got === null ? 'null' : got.type);
          // The pushed fd comes back exactly once: in this very event, never in another.
          const carried = got?.type === 'hello' ? got.shm : got?.type === 'vector' ? got.fd : null;
          if (carried !== fd) fail(`event carried fd ${carried}, pushed ${fd}`);
          if (fd !== null) {
            if (returned.has(fd)) fail(`fd ${fd} returned twice`);
            returned.add(fd);
            fdsReturned++;
          }
        }

        // Observable state matches the model after every message, failed or not.
        if (decoder.id !== model.id) fail(`id ${decoder.id}, model ${model.id}`);
        if (decoder.ownVectors !== model.own) fail(`ownVectors ${decoder.ownVectors}, model ${model.own}`);
        if (decoder.helloDone !== model.helloDone) fail(`helloDone ${decoder.helloDone}, model ${model.helloDone}`);
        const peers = decoder.peers();
        const modelPeers = [...model.peers.keys()];
        if (!isDeepStrictEqual(peers, modelPeers)) fail(`peers() ${inspect(peers)}, model ${inspect(modelPeers)}`);
        for (let p = 0; p < 8; p++) {
          const want = p === model.id ? model.own : (model.peers.get(p) ?? 0);
          if (decoder.vectorsOf(p) !== want) fail(`vectorsOf(${p}) ${decoder.vectorsOf(p)}, model ${want}`);
        }
      }

      if (decoder.failed) {
        // Sticky failure: more pushes (their fds stay the caller's) and end() all refuse.
        for (let k = 0; k < 3; k++) {
          const [value, fd] = nextMessage();
          checkReason(thrownBy(() => decoder.push(value, fd)), 'after-error', 'push after an error');
          if (fd !== null) fdsRefused++;
        }
        checkReason(thrownBy(() => decoder.end()), 'after-error', 'end() after an error');
      } else if (chance(50)) {
        const partial = chance(20) ? 1 + (rng() % 7) : 0;
        const want = partial > 0 ? 'truncated' : !model.helloDone ? 'incomplete' : null;
        const error = thrownBy(() => decoder.end(partial));
        if (want === null) {
          if (error !== undefined) fail(`end() threw ${inspect(error)}`);
          bump('end-ok');
        } else {
          checkReason(error, want, `end(${partial})`);
        }
      }
    }

    // No fd lost or duplicated overall.
    expect(fdsReturned + fdsRefused, `seed ${BASE_SEED}`).toBe(fdsPushed);
    // The generator really exercised every rule, not just the happy path.
    const reasons: ProtocolErrorReason[] = [
      'bad-version', 'unexpected-fd', 'bad-id', 'missing-shm', 'duplicate-shm', 'out-of-range',
      'unknown-peer', 'self-leave', 'too-many-vectors', 'truncated', 'incomplete', 'after-error',
    ];
    for (const key of [...reasons, 'null', 'hello', 'vector', 'peer-left', 'end-ok']) {
      const count = seen.get(key) ?? 0;
      expect(count, `${key} too rare (seed ${BASE_SEED}): ${inspect(seen)}`).toBeGreaterThan(20);
    }
  });
});
