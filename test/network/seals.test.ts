/**
 * A peer holds the very fd of the server's memory. Sealed (memfd), it can neither truncate it
 * under everyone's mappings nor seal it against later peers; named POSIX memory (-M), which
 * cannot be sealed, is repaired by the server before it touches or hands it out again.
 * Servers run in child processes: on a regression they die of SIGBUS there.
 */
import { ftruncateSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../lib/sys/binding.js';
import { Peer, isHeaderError } from '../../lib/index.js';
import { SharedMemory } from '../../lib/sys/index.js';
import { killAllChildren, startServerChild, type ServerChild } from '../helpers/children.js';
import { uniqueShmName } from '../helpers/paths.js';
import { within } from '../helpers/wait.js';
import { systemError } from '../sys/helpers.js';
import { hostileServer } from './hostile-server.js';

const peers: Peer[] = [];
const cleanups: (() => void)[] = [];

afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  for (const c of cleanups.splice(0).reverse()) c();
  await killAllChildren();
});

function unlinkLeftover(name: string): void {
  try {
    SharedMemory.unlink(name);
  } catch {
    // the server removed it
  }
}

async function connect(server: ServerChild, bitmask: boolean): Promise<Peer> {
  const peer = await Peer.connect(server.socketPath, { bitmask, timeout: 20_000 });
  peers.push(peer);
  return peer;
}

async function expectAlive(server: ServerChild): Promise<void> {
  const reply = await server.request({ cmd: 'peers' });
  expect(reply.error, JSON.stringify(reply.error)).toBeUndefined();
}

describe("the server's memfd is sealed", () => {
  for (const bitmask of [true, false]) {
    it(`${bitmask ? '--bitmask' : 'plain'}: a peer can neither truncate, grow nor further seal it; later peers join and map it whole`, async () => {
      const server = await startServerChild({ bitmask, size: 65536, vectors: 1 }, 'sealed server');
      const first = await connect(server, bitmask);
      expect(first.shm.seals).toEqual({ shrink: true, grow: true, write: false, futureWrite: false, seal: true });

      expect(systemError(() => ftruncateSync(first.shm.fd, 0)).code).toBe('EPERM');
      expect(systemError(() => ftruncateSync(first.shm.fd, 1 << 20)).code).toBe('EPERM');
      const { F_SEAL_FUTURE_WRITE, F_SEAL_WRITE } = native.constants;
      expect(systemError(() => native.addSeals(first.shm.fd, F_SEAL_FUTURE_WRITE)).code).toBe('EPERM');
      expect(systemError(() => native.addSeals(first.shm.fd, F_SEAL_WRITE)).code).toBe('EPERM');
      expect(first.shm.currentSize()).toBe(65536);

      // The next join writes header bits (bitmask) and hands the memory out again.
      const second = await connect(server, bitmask);
      expect(second.shm.size).toBe(65536);
      second.shm.bytes()[65535] = 9; // writable, the whole of it
      expect(first.shm.bytes()[65535]).toBe(9);
      await within(first.waitForPeer(second.id), 'second joins');
      await expectAlive(server);
      if (bitmask) expect((await server.request({ cmd: 'bits' })).live).toEqual([first.id, second.id]);
    });
  }
});

describe('named POSIX memory (-M) cannot be sealed', () => {
  it('seal() says so; its seals are fixed at none (only F_SEAL_SEAL)', () => {
    const name = uniqueShmName('seal');
    const shm = SharedMemory.create({ name, size: 4096 });
    cleanups.push(() => {
      shm.close();
      SharedMemory.unlink(name);
    });
    expect(shm.seals).toEqual({ shrink: false, grow: false, write: false, futureWrite: false, seal: true });
    expect(() => shm.seal()).toThrow(/cannot be sealed/);
  });

  it('--bitmask: a peer that truncates it does not kill the server; it is grown back, the header rewritten, newcomers map it whole', async () => {
    const shmName = uniqueShmName('trunc');
    cleanups.push(() => unlinkLeftover(shmName)); // a SIGKILLed server child leaves it behind
    const server = await startServerChild({ bitmask: true, size: 65536, shmName }, 'named server');
    const first = await connect(server, true);
    const bystander = await connect(server, true);
    ftruncateSync(first.shm.fd, 0); // the hostile act: the object is now empty

    const third = await connect(server, true); // the server writes header bits at this join
    expect(third.shm.size).toBe(65536);
    const warning = await server.waitFor((m) => m.type === 'warning' && /truncated/.test(String(m.message)), 'truncation warning');
    expect(warning.message).toContain('truncated to 0 bytes');
    expect(warning.message).toContain('grown back to 65536');
    await expectAlive(server);
    expect((await server.request({ cmd: 'bits' })).live).toEqual([first.id, bystander.id, third.id]);
    // The bystander's mapping is valid again (the cut-off bytes read as zero, no SIGBUS).
    expect(bystander.shm.bytes()[65535]).toBe(0);

    // Again, and this time a peer leaves: the leave path clears bits too.
    ftruncateSync(first.shm.fd, 100);
    first.close();
    await server.waitFor((m) => m.type === 'peer-left' && m.id === first.id, 'first leaves');
    await expectAlive(server);
    expect((await server.request({ cmd: 'bits' })).live).toEqual([bystander.id, third.id]);
    expect(third.shm.currentSize()).toBe(65536);
  });

  it('plain: newcomers after a truncation get the whole object, not an empty one', async () => {
    const shmName = uniqueShmName('trunc-plain');
    cleanups.push(() => unlinkLeftover(shmName)); // a SIGKILLed server child leaves it behind
    const server = await startServerChild({ size: 65536, shmName }, 'named plain server');
    const first = await connect(server, false);
    ftruncateSync(first.shm.fd, 0);
    const second = await connect(server, false);
    expect(second.shm.size).toBe(65536);
    await expectAlive(server);
  });
});

describe('a peer given truncated memory says so', () => {
  function hostile(shmFd: number): string {
    const server = hostileServer(shmFd);
    cleanups.push(server.close);
    return server.socketPath;
  }

  it('an empty object: EINVAL naming the truncation', async () => {
    const fd = native.memfdCreate('empty');
    const error = await Peer.connect(hostile(fd)).then(() => null, (e: unknown) => e);
    expect(error).toMatchObject({ code: 'EINVAL', syscall: 'mmap' });
    expect(String((error as Error).message)).toMatch(/empty \(size 0; truncated/);
  });

  it('smaller than its bitmask header claims: a HeaderError saying both sizes', async () => {
    // A real header for 64 peers (data from 4096), on an object cut to 2048 bytes.
    const shm = SharedMemory.create({ size: 8192 });
    const { headerLayout, writeHeader } = await import('../../lib/protocol/header.js');
    writeHeader(shm.buffer, headerLayout(64));
    const fd = native.dupFd(shm.fd);
    shm.close();
    ftruncateSync(fd, 2048);
    const error = await Peer.connect(hostile(fd), { bitmask: true }).then(() => null, (e: unknown) => e);
    expect(isHeaderError(error), String(error)).toBe(true);
    expect(String((error as Error).message)).toContain('2048 bytes, smaller than the 4096 bytes');
  });
});
