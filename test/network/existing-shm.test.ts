/**
 * PeerServer's `existingShm`: what a server does with a named object that exists already (the
 * leftover of a server that died). 'fail' (the default) refuses with an explained EEXIST;
 * 'reuse' takes it over as QEMU's server does, but never shrinks it, never takes another
 * user's or a group/other-accessible one, and clears any old bitmask header; 'replace' makes a
 * fresh one. A live server on the socket is refused before its memory is touched.
 */
import { chmodSync, chownSync, existsSync, mkdirSync, rmdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Peer, PeerServer } from '../../lib/index.js';
import { SharedMemory } from '../../lib/sys/index.js';
import { HEADER_MAGIC, HeaderField, headerLayout, writeHeader } from '../../lib/protocol/header.js';
import { closeTracked, track } from '../helpers/network.js';
import { uniqueShmName, uniqueSocketPath } from '../helpers/paths.js';

const names: string[] = [];

afterEach(() => {
  closeTracked();
  for (const name of names.splice(0)) {
    try {
      SharedMemory.unlink(name);
    } catch {
      // removed by the server, or never created
    }
    try {
      rmdirSync(`/dev/shm${name}`);
    } catch {
      // not a directory
    }
  }
});

function shmName(tag = 'left'): string {
  const name = uniqueShmName(tag);
  names.push(name);
  return name;
}

/** A named object as a dead server leaves it: created, filled by `fill`, closed, not unlinked. */
function leaveBehind(name: string, size: number, fill: (shm: SharedMemory) => void = () => {}): void {
  const shm = SharedMemory.create({ name, size });
  try {
    fill(shm);
  } finally {
    shm.close();
  }
}

/** The bytes of the object now, through a mapping of its own. */
function peek(name: string, offset: number, length: number): number[] {
  const shm = SharedMemory.open(name);
  try {
    return [...shm.bytes(offset, length)];
  } finally {
    shm.close();
  }
}

function listen(options: Parameters<typeof PeerServer.listen>[0]): PeerServer {
  return track(PeerServer.listen({ socketPath: uniqueSocketPath('exist'), ...options }));
}

describe("existingShm: 'fail' (the default)", () => {
  it('refuses an existing object with an EEXIST that says what to do, and leaves it alone', () => {
    const name = shmName();
    leaveBehind(name, 8192, (shm) => shm.bytes().set([1, 2, 3], 100));
    const socketPath = uniqueSocketPath('fail');
    let error: NodeJS.ErrnoException | undefined;
    try {
      track(PeerServer.listen({ socketPath, shmName: name }));
    } catch (e) {
      error = e as NodeJS.ErrnoException;
    }
    expect(error?.code).toBe('EEXIST');
    expect(error?.message).toMatch(/exists already .*existingShm: 'reuse' or 'replace'/);
    expect(statSync(`/dev/shm${name}`).size).toBe(8192);
    expect(peek(name, 100, 3)).toEqual([1, 2, 3]);
    expect(existsSync(socketPath)).toBe(false);
  });

  it('creates the object as before when there is none, and reports no leftover', () => {
    const name = shmName('fresh');
    const server = listen({ shmName: name, size: 16384, existingShm: 'reuse' });
    expect(server.leftoverShm).toBeNull();
    expect(server.size).toBe(16384);
    expect(statSync(`/dev/shm${name}`).mode & 0o777).toBe(0o600);
  });

  it('rejects an unknown policy with a TypeError', () => {
    expect(() => PeerServer.listen({ shmName: shmName(), existingShm: 'steal' as never })).toThrow(TypeError);
  });
});

describe("existingShm: 'reuse'", () => {
  it('a smaller leftover keeps its contents and grows to the size; a peer maps it whole; close removes it', async () => {
    const name = shmName();
    leaveBehind(name, 8192, (shm) => shm.bytes().set([0xde, 0xad, 0xbe, 0xef], 4000));
    const server = listen({ shmName: name, size: 65536, existingShm: 'reuse' });
    expect(server.leftoverShm).toEqual({ name, action: 'reused', foundSize: 8192, wantedSize: 65536 });
    expect(server.size).toBe(65536);
    expect(statSync(`/dev/shm${name}`).size).toBe(65536);

    const peer = track(await Peer.connect(server.socketPath));
    expect(peer.shm.size).toBe(65536);
    expect([...peer.shm.bytes(4000, 4)]).toEqual([0xde, 0xad, 0xbe, 0xef]);
    expect(peer.shm.bytes()[65535]).toBe(0); // the grown part

    server.close();
    expect(existsSync(`/dev/shm${name}`)).toBe(false);
  });

  it('a larger leftover is never shrunk: kept at its size (rounded up to a power of two)', async () => {
    const name = shmName();
    leaveBehind(name, 65536);
    const server = listen({ shmName: name, size: 16384, existingShm: 'reuse' });
    expect(server.size).toBe(65536);
    expect(server.requestedSize).toBe(16384);
    expect(server.leftoverShm).toMatchObject({ action: 'reused', foundSize: 65536, wantedSize: 16384 });
    const peer = track(await Peer.connect(server.socketPath));
    expect(peer.shm.size).toBe(65536);

    const odd = shmName('odd');
    leaveBehind(odd, 20000);
    const second = listen({ shmName: odd, size: 4096, existingShm: 'reuse' });
    expect(second.size).toBe(32768); // QEMU maps only powers of two
    expect(statSync(`/dev/shm${odd}`).size).toBe(32768);
  });

  it('--bitmask: the old header and its bits are gone, a fresh header is written, the data after it stays', async () => {
    const name = shmName();
    const old = headerLayout(1024); // a bigger header than the new server's (8192 bytes)
    leaveBehind(name, 65536, (shm) => {
      writeHeader(shm.buffer, old);
      const bits = new BigUint64Array(shm.buffer);
      bits[old.pendingOffset / 8] = 0xa0n; // pending 5 and 7
      bits[old.liveOffset / 8] = 0x8n; // live 3
      new Uint32Array(shm.buffer, old.leaseOffset, 8).fill(0x1234);
      shm.bytes().set([7, 7, 7], old.dataOffset + 10);
    });
    const server = listen({ shmName: name, size: 65536, bitmask: true, maxPeers: 64, existingShm: 'reuse' });
    expect(server.dataOffset).toBe(4096);
    const peer = track(await Peer.connect(server.socketPath, { bitmask: true }));
    expect(peer.id).toBe(0);
    expect(peer.header).toMatchObject({ maxPeers: 64, dataOffset: 4096 });

    const h = server.header!;
    const view = new DataView(peer.shm.buffer);
    expect(view.getBigUint64(h.pendingOffset, true)).toBe(0n);
    expect(view.getBigUint64(h.liveOffset, true)).toBe(1n); // only the new peer 0
    expect([...new Uint32Array(peer.shm.buffer, h.leaseOffset, 8)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    // The old header reached beyond the new one (8192 bytes): that part is cleared too.
    expect(old.dataOffset).toBe(8192);
    expect([...peer.shm.bytes(4096, 4096)].every((b) => b === 0)).toBe(true);
    expect([...peer.shm.bytes(old.dataOffset + 10, 3)]).toEqual([7, 7, 7]);
  });

  it('without bitmask: an old bitmask header is cleared, so no bitmask peer mistakes it for a live one', async () => {
    const name = shmName();
    const old = headerLayout(64);
    leaveBehind(name, 65536, (shm) => {
      writeHeader(shm.buffer, old);
      shm.bytes().set([9, 8], old.dataOffset);
    });
    const server = listen({ shmName: name, size: 65536, existingShm: 'reuse' });
    await expect(Peer.connect(server.socketPath, { bitmask: true })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_HEADER' });
    const peer = track(await Peer.connect(server.socketPath));
    expect([...peer.shm.bytes(0, old.dataOffset)].every((b) => b === 0)).toBe(true);
    expect([...peer.shm.bytes(old.dataOffset, 2)]).toEqual([9, 8]);
  });

  it('an object without a header keeps every byte', async () => {
    const name = shmName();
    leaveBehind(name, 4096, (shm) => shm.bytes().fill(0x5a));
    const server = listen({ shmName: name, size: 4096, existingShm: 'reuse' });
    const peer = track(await Peer.connect(server.socketPath));
    expect([...peer.shm.bytes()].every((b) => b === 0x5a)).toBe(true);
  });

  const refusals: [string, (path: string) => void, RegExp][] = [
    ['open to group and others (mode 644)', (path) => chmodSync(path, 0o644), /mode 644 lets group or others open it/],
  ];
  // Only root can give an object away.
  if (process.geteuid?.() === 0) {
    refusals.push(['of another user', (path) => chownSync(path, 65534, 65534), /belongs to uid 65534, not to this user/]);
  }
  it.each(refusals)('an object %s is not reused: EEXIST says why, and it is left alone', (_what, change, why) => {
    const name = shmName();
    leaveBehind(name, 8192, (shm) => shm.bytes().set([4, 2], 0));
    change(`/dev/shm${name}`);
    const socketPath = uniqueSocketPath('refused');
    let error: NodeJS.ErrnoException | undefined;
    try {
      track(PeerServer.listen({ socketPath, shmName: name, size: 65536, existingShm: 'reuse' }));
    } catch (e) {
      error = e as NodeJS.ErrnoException;
    }
    expect(error?.code).toBe('EEXIST');
    expect(error?.message).toMatch(why);
    expect(error?.message).toMatch(/is not reused.*existingShm: 'replace'/);
    expect(statSync(`/dev/shm${name}`).size).toBe(8192);
    expect(peek(name, 0, 2)).toEqual([4, 2]);
    expect(existsSync(socketPath)).toBe(false);
  });

  it('a directory at the name is no shared memory object: refused, by reuse and by replace', () => {
    const name = shmName('dir');
    mkdirSync(`/dev/shm${name}`, { mode: 0o700 });
    for (const existingShm of ['reuse', 'replace'] as const) {
      expect(() => PeerServer.listen({ socketPath: uniqueSocketPath('dir'), shmName: name, existingShm })).toThrow(
        /not a shared memory object \(not a regular file\)/,
      );
    }
    expect(statSync(`/dev/shm${name}`).isDirectory()).toBe(true);
  });

  it('a server that fails to start leaves the leftover where it was', () => {
    const name = shmName();
    leaveBehind(name, 8192, (shm) => shm.bytes().set([1], 10));
    const socketPath = join(tmpdir(), 'ivt-no-such-dir', 'x.sock');
    expect(() => PeerServer.listen({ socketPath, shmName: name, existingShm: 'reuse' })).toThrow(/ENOENT/);
    expect(existsSync(`/dev/shm${name}`)).toBe(true);
    expect(peek(name, 10, 1)).toEqual([1]);
  });

  it("a live server's object is not taken: its socket answers, so the second server is refused first", async () => {
    const name = shmName();
    const first = listen({ shmName: name, size: 65536, bitmask: true });
    first.shm.bytes().set([3, 1, 4], first.dataOffset);
    const peer = track(await Peer.connect(first.socketPath, { bitmask: true }));
    expect(() => PeerServer.listen({ socketPath: first.socketPath, shmName: name, size: 1 << 20, existingShm: 'reuse' })).toThrow(
      expect.objectContaining({ code: 'ERR_IVSHMEM_IN_USE', message: expect.stringMatching(/already listening/) }),
    );
    expect(() => PeerServer.listen({ socketPath: first.socketPath, shmName: name, existingShm: 'replace' })).toThrow(/already listening/);
    expect(statSync(`/dev/shm${name}`).size).toBe(65536);
    expect([...peer.shm.bytes(first.dataOffset, 3)]).toEqual([3, 1, 4]);
    expect(new DataView(peer.shm.buffer).getBigUint64(HeaderField.magic, true)).toBe(HEADER_MAGIC);
    expect(new DataView(peer.shm.buffer).getBigUint64(first.header!.liveOffset, true)).toBe(1n);
    expect(first.closed).toBe(false);
    expect(first.peers()).toEqual([{ id: peer.id, vectors: 1 }]);
  });
});

describe("existingShm: 'replace'", () => {
  it('removes the leftover and creates a fresh, zeroed object of the size; an old mapping keeps the old memory', async () => {
    const name = shmName();
    leaveBehind(name, 1 << 20, (shm) => shm.bytes().fill(0x77, 0, 4096));
    const holder = SharedMemory.open(name); // a VM of the dead server, still mapping it
    try {
      const server = listen({ shmName: name, size: 16384, existingShm: 'replace' });
      expect(server.leftoverShm).toEqual({ name, action: 'replaced', foundSize: 1 << 20, wantedSize: 16384 });
      expect(server.size).toBe(16384);
      const peer = track(await Peer.connect(server.socketPath));
      expect(peer.shm.size).toBe(16384);
      expect([...peer.shm.bytes()].every((b) => b === 0)).toBe(true);
      expect(holder.bytes()[0]).toBe(0x77);
      peer.shm.bytes()[0] = 1;
      expect(holder.bytes()[0]).toBe(0x77);
    } finally {
      holder.close();
    }
  });
});
