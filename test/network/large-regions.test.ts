/**
 * Regions larger than one ArrayBuffer can be (4 GiB on Node 20): created, served, handed over
 * by a hostile server. Each case runs in a child process, so that a regression (Node died of
 * SIGSEGV here) fails the test instead of killing the test process.
 */
import { constants as bufferConstants } from 'node:buffer';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../lib/sys/binding.js';
import { DEFAULT_MAX_SIZE, Peer, PeerServer, isTooLargeError } from '../../lib/index.js';
import { SharedMemory } from '../../lib/sys/index.js';
import { ivshmem, run } from '../fixtures/cli/child.js';
import { JsonChild, killAllChildren, type ChildMessage } from '../helpers/children.js';
import { uniqueSocketPath } from '../helpers/paths.js';
import { within } from '../helpers/wait.js';
import { hostileServer, sparseMemfd } from './hostile-server.js';

const GiB = 2 ** 30;
const LIMIT = SharedMemory.MAX_BUFFER_LENGTH;
const cleanups: (() => void)[] = [];

/** hostileServer() closed after the test. */
function hostile(shmFd: number): string {
  const server = hostileServer(shmFd);
  cleanups.push(server.close);
  return server.socketPath;
}

afterEach(async () => {
  await killAllChildren();
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

/** Runs test/fixtures/network/large-region.mjs and returns its one line; fails if the child died. */
async function inChild(options: Record<string, unknown>): Promise<ChildMessage> {
  const child = JsonChild.fixture('network/large-region.mjs', options, `large ${String(options.mode)}`);
  const line = await child.next(['result', 'error', 'fatal']);
  const exit = await child.exit();
  expect(exit, `the child ended badly${child.diagnostics()}`).toEqual({ code: 0, signal: null });
  expect(line.type, JSON.stringify(line)).not.toBe('fatal');
  return line;
}

describe('regions larger than 4 GiB', () => {
  it('the runtime limit is what Node says one buffer can hold', () => {
    expect(LIMIT).toBe(bufferConstants.MAX_LENGTH);
    expect(LIMIT).toBeGreaterThanOrEqual(2 ** 32);
  });

  for (const size of [2 ** 32 + 4096, 2 ** 33]) {
    it(`SharedMemory.create({ size: ${size} }) maps it all; views reach both ends; buffer is a RangeError naming the limit`, async () => {
      const r = await inChild({ mode: 'create', size });
      expect(r.type, JSON.stringify(r)).toBe('result');
      expect(r.size).toBe(size);
      expect(r.ends).toEqual([0x5a, 0xa5]);
      expect(r.tailAfterClose).toBe(0); // views are detached at close, like the buffer
      if (size > LIMIT) {
        expect(r.bufferError.name).toBe('RangeError');
        expect(r.bufferError.message).toContain(String(LIMIT));
        expect(r.bufferError.message).toContain('view(');
      } else {
        expect(r.bufferLength).toBe(size);
      }
    });
  }

  it('4 GiB exactly still has its whole buffer', async () => {
    const r = await inChild({ mode: 'create', size: 2 ** 32 });
    expect(r).toMatchObject({ type: 'result', size: 2 ** 32, bufferLength: 2 ** 32, bufferError: null, ends: [0x5a, 0xa5] });
  });

  it('view() checks its window: past the end and longer than one buffer are RangeErrors, after close a ClosedError', () => {
    const shm = SharedMemory.create({ size: 8192 });
    cleanups.push(() => shm.close());
    expect(() => shm.view(4096, 8192)).toThrow(RangeError);
    expect(() => shm.view(-1, 1)).toThrow(RangeError);
    expect(() => shm.view(1.5, 1)).toThrow(RangeError);
    const a = new Uint8Array(shm.view(4096, 16));
    a[3] = 42;
    expect(shm.bytes()[4099]).toBe(42); // the same memory as the buffer
    shm.close();
    expect(a.byteLength).toBe(0);
    expect(() => shm.view(0, 1)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CLOSED' }));
  });

  it('many views of one mapping stay bounded and are all detached at close', () => {
    const shm = SharedMemory.create({ size: 65536 });
    const kept: Uint8Array[] = [];
    for (let i = 0; i < 5000; i++) {
      const v = new Uint8Array(shm.view((i % 16) * 4096, 4096));
      if (i % 500 === 0) kept.push(v);
    }
    shm.close();
    for (const v of kept) expect(v.byteLength).toBe(0);
  });

  it('ivshmem server -l 8G (and with --bitmask) serves 8 GiB; a peer reaches its last byte', async () => {
    for (const extra of [[], ['--bitmask']]) {
      const socket = uniqueSocketPath('cli8g');
      const server = ivshmem(['server', '-S', socket, '-l', '8G', ...extra], 'server 8G');
      expect(await server.stdout.take()).toBe(`listening on ${socket}`);
      const r = await inChild({ mode: 'connect', socketPath: socket });
      expect(r, JSON.stringify(r)).toMatchObject({ type: 'result', size: 8 * GiB, ends: [0x5a, 0xa5] });
      const bitmaskPeer = extra.length > 0 ? await Peer.connect(socket, { bitmask: true }) : null;
      expect(bitmaskPeer?.shm.size ?? 8 * GiB).toBe(8 * GiB);
      bitmaskPeer?.close();
      server.signal('SIGTERM');
      expect(await server.exit()).toEqual({ code: 0, signal: null });
    }
  });

  it('PeerServer.listen({ size: 8 GiB, bitmask: true }) writes its header and keeps the live bits', async () => {
    const server = PeerServer.listen({ socketPath: uniqueSocketPath('big'), size: 8 * GiB, bitmask: true });
    cleanups.push(() => server.close());
    const peer = await Peer.connect(server.socketPath, { bitmask: true });
    cleanups.push(() => peer.close());
    expect(peer.shm.size).toBe(8 * GiB);
    expect(() => peer.shm.buffer).toThrow(RangeError);
    await within(peer.waitForPeer(peer.id), 'own join');
  });
});

describe('Peer.connect maxSize', () => {
  it(`a hostile server's sparse 1 TiB memfd is refused by default (${DEFAULT_MAX_SIZE} bytes) with a TooLargeError, in a child that survives`, async () => {
    const socketPath = hostile(sparseMemfd(2 ** 40));
    const r = await inChild({ mode: 'connect', socketPath });
    expect(r.type, JSON.stringify(r)).toBe('error');
    expect(r.error).toMatchObject({ name: 'TooLargeError', code: 'ERR_IVSHMEM_TOO_LARGE', size: 2 ** 40, limit: DEFAULT_MAX_SIZE });
  });

  it('with maxSize raised, the same 1 TiB region is mapped whole and both ends are reachable', async () => {
    const socketPath = hostile(sparseMemfd(2 ** 40));
    const r = await inChild({ mode: 'connect', socketPath, maxSize: 2 ** 41 });
    expect(r, JSON.stringify(r)).toMatchObject({ type: 'result', size: 2 ** 40, ends: [0x5a, 0xa5] });
  });

  it('a region just over maxSize is refused in this process too, with nothing left open', async () => {
    const socketPath = hostile(sparseMemfd(2 * 1024 * 1024));
    // The hostile server in this process keeps one socket and one eventfd for each client it accepts.
    const before = native.liveResources() + 2;
    const error = await Peer.connect(socketPath, { maxSize: 1024 * 1024 }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isTooLargeError(error), String(error)).toBe(true);
    expect(error).toMatchObject({ size: 2 * 1024 * 1024, limit: 1024 * 1024 });
    expect(native.liveResources()).toBe(before);
    await expect(Peer.connect(socketPath, { maxSize: 0 })).rejects.toThrow(RangeError);
  });

  it('ivshmem peer --max-size refuses a larger region and says why', async () => {
    const server = PeerServer.listen({ socketPath: uniqueSocketPath('cli-max'), size: 1 << 20 });
    cleanups.push(() => server.close());
    const r = await run(['peer', '-S', server.socketPath, '--max-size', '64K']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('shared memory of 1048576 bytes is larger than the 65536 bytes allowed (maxSize)');
  });
});
