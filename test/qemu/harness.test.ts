/**
 * Self-tests of the QEMU qtest harness (test/helpers/qemu.ts) that need no ivshmem server able
 * to pass fds: QEMU's start-up failures (nothing listening, wrong protocol version, a server
 * that never sends the shm) and the QEMU lookup. Interop with our PeerServer lives elsewhere.
 *
 * Without QEMU these tests skip with QEMU_MISSING_MESSAGE; in CI (CI set) they fail instead.
 */
import { existsSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  QEMU_MISSING_MESSAGE,
  QemuVm,
  findQemu,
  requireQemuOrSkip,
} from '../helpers/qemu.js';
import { useTempDir } from '../helpers/paths.js';

const qemu = requireQemuOrSkip();
if (qemu === null) console.warn(QEMU_MISSING_MESSAGE);

const dir = useTempDir('qemu-harness');

function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const saved: Record<string, string | undefined> = {};
  for (const k of Object.keys(vars)) {
    saved[k] = process.env[k];
    if (vars[k] === undefined) delete process.env[k];
    else process.env[k] = vars[k];
  }
  try {
    return fn();
  } finally {
    for (const k of Object.keys(saved)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

/** A unix-socket "server" that only writes raw 8-byte messages (no fds). */
async function rawServer(name: string, onConnection: (socket: Socket) => void): Promise<{ path: string; server: Server; sockets: Socket[] }> {
  const path = join(dir, name);
  const sockets: Socket[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    onConnection(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  return { path, server, sockets };
}

async function closeRaw(s: { server: Server; sockets: Socket[] }): Promise<void> {
  for (const socket of s.sockets) socket.destroy();
  await new Promise<void>((resolve) => s.server.close(() => resolve()));
}

function int64le(value: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(BigInt(value));
  return b;
}

/** The pid from the harness error message; the harness reaps QEMU before rejecting. */
function expectReaped(err: Error): void {
  const m = /QEMU \(pid (\d+)\)/.exec(err.message);
  expect(m, err.message).not.toBeNull();
  expect(existsSync(`/proc/${m![1]}`)).toBe(false);
}

describe('findQemu / requireQemuOrSkip', () => {
  it('returns null without QEMU on PATH; requireQemuOrSkip throws only in CI', () => {
    const empty = join(dir, 'empty-bin');
    withEnv({ PATH: empty, CI: undefined }, () => {
      expect(findQemu()).toBeNull();
      expect(requireQemuOrSkip()).toBeNull();
    });
    withEnv({ PATH: empty, CI: 'false' }, () => expect(requireQemuOrSkip()).toBeNull());
    withEnv({ PATH: empty, CI: 'true' }, () => {
      expect(() => requireQemuOrSkip()).toThrow(/QEMU is required in CI/);
      expect(() => requireQemuOrSkip()).toThrow(/apt-get install -y qemu-system-x86/);
    });
    expect(QEMU_MISSING_MESSAGE).toContain('apt-get install -y qemu-system-x86');
  });

  // Declared only when QEMU is absent, so that a machine with QEMU reports no skipped test.
  if (qemu === null) {
    it('QEMU missing', (ctx) => {
      ctx.skip(QEMU_MISSING_MESSAGE);
    });
  }

  it.skipIf(qemu === null)('finds qemu-system-x86_64 on PATH', () => {
    expect(findQemu()).toBe(qemu);
    expect(qemu).toMatch(/\/qemu-system-x86_64$/);
  });
});

describe.skipIf(qemu === null)('QemuVm start-up failures (real QEMU, no fd-passing server)', () => {
  it('builds exactly the QEMU command line of commandLine()', () => {
    expect(QemuVm.commandLine({ socketPath: '/tmp/ivshmem.sock' })).toEqual([
      '-machine', 'pc', '-accel', 'tcg', '-S', '-qtest', 'stdio', '-qtest-log', '/dev/null',
      '-display', 'none', '-nodefaults', '-m', '128M',
      '-chardev', 'socket,id=ch0,path=/tmp/ivshmem.sock',
      '-device', 'ivshmem-doorbell,chardev=ch0,vectors=1,ioeventfd=on,addr=0x4',
    ]);
    expect(QemuVm.commandLine({ socketPath: '/tmp/a,b', vectors: 4, ioeventfd: false, memMb: 64 })).toContain(
      'ivshmem-doorbell,chardev=ch0,vectors=4,ioeventfd=off,addr=0x4',
    );
    expect(QemuVm.commandLine({ socketPath: '/tmp/a,b' })).toContain('socket,id=ch0,path=/tmp/a,,b');
  });

  it('rejects with QEMU\'s message when nothing listens on the socket', async () => {
    const path = join(dir, 'nobody.sock');
    const err = await QemuVm.start({ socketPath: path, binary: qemu! }).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err!.message).toMatch(/Failed to connect/);
    expect(err!.message).toMatch(/No such file or directory/);
    expect(err!.message).toContain(path);
    expect(err!.message).toMatch(/exited with code 1/);
    expectReaped(err!);
  });

  it('rejects with QEMU\'s message when the server speaks protocol version 1', async () => {
    const s = await rawServer('v1.sock', (socket) => socket.write(int64le(1)));
    try {
      const err = await QemuVm.start({ socketPath: s.path }).then(() => null, (e: unknown) => e as Error);
      expect(err?.message).toMatch(/server sent version 1, expecting 0/);
      expectReaped(err!);
    } finally {
      await closeRaw(s);
    }
  });

  it('times out (and kills QEMU) when the server never sends the shm', async () => {
    // version 0 + id 0 and then nothing: QEMU blocks in device realize waiting for the shm fd.
    const s = await rawServer('stall.sock', (socket) => socket.write(Buffer.concat([int64le(0), int64le(0)])));
    try {
      const t0 = performance.now();
      const err = await QemuVm.start({ socketPath: s.path, startTimeoutMs: 500 }).then(
        () => null,
        (e: unknown) => e as Error,
      );
      expect(performance.now() - t0).toBeLessThan(5000);
      expect(err?.message).toMatch(/`endianness` got no reply within 500 ms; killing QEMU/);
      expectReaped(err!);
      expect(s.sockets.length).toBe(1); // QEMU did connect
    } finally {
      await closeRaw(s);
    }
  });
});
