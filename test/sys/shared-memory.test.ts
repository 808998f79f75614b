import { existsSync, fstatSync, statSync, unlinkSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../lib/sys/binding.js';
import { isSystemError, type SystemError } from '../../lib/index.js';
import { SharedMemory, UnixSocket, normalizeShmName } from '../../lib/sys/index.js';
import { killAllChildren, type JsonChild } from '../helpers/children.js';
import { uniqueShmName, uniqueSocketPath, useTempDir } from '../helpers/paths.js';
import { waitFor } from '../helpers/wait.js';
import { acceptWait, fdIsOpen, nodeChild, systemError, thrown } from './helpers.js';

const opened: SharedMemory[] = [];
const names = new Set<string>();

/** Creates and remembers a region so that afterEach closes (and unlinks) it. */
function track(shm: SharedMemory): SharedMemory {
  opened.push(shm);
  if (shm.name !== null) names.add(shm.name);
  return shm;
}

function named(tag: string, size = 4096): SharedMemory {
  const name = uniqueShmName(tag);
  names.add(name);
  return track(SharedMemory.create({ name, size }));
}

const encoder = new TextEncoder();
function writeText(bytes: Uint8Array, offset: number, text: string): void {
  const encoded = encoder.encode(text);
  bytes.set(encoded, offset);
  bytes[offset + encoded.length] = 0;
}
function readText(bytes: Uint8Array, offset: number): string {
  const view = bytes.subarray(offset, offset + 256);
  const end = view.indexOf(0);
  return new TextDecoder().decode(view.subarray(0, end < 0 ? view.length : end));
}

const dir = useTempDir('shm');

afterEach(async () => {
  await killAllChildren();
  for (const shm of opened.splice(0)) shm.close();
  for (const name of names) {
    try {
      SharedMemory.unlink(name);
    } catch (error) {
      if ((error as SystemError).code !== 'ENOENT') throw error;
    }
  }
  names.clear();
});

/**
 * The conversation of shm-peer.mjs: the child reports the parent's first text, the parent
 * writes a second text after the child mapped, the child replies into the memory and raises
 * its flag, which the parent sees by polling the shared memory itself.
 */
async function converse(shm: SharedMemory, child: JsonChild, initial: string): Promise<void> {
  const bytes = shm.bytes();
  const flags = new Int32Array(shm.buffer, 256, 2);
  const mapped = await child.next('mapped');
  expect(mapped.initial).toBe(initial);
  expect(mapped.size).toBe(shm.size);

  const later = `second text from ${process.pid} at ${Math.random()}`;
  writeText(bytes, 512, later);
  Atomics.store(flags, 0, 1);

  // The parent learns of the child's write from the shared memory, not from the pipe.
  await waitFor(() => Atomics.load(flags, 1) === 1, "the child's flag in shared memory");
  expect(readText(bytes, 1024)).toBe(`child ${child.proc.pid} saw: ${later}`);
  const replied = await child.next('replied');
  expect(replied.later).toBe(later);

  child.send({ cmd: 'exit' });
  await child.next('closed');
  expect(await child.exit()).toEqual({ code: 0, signal: null });
}

describe('SharedMemory across processes', () => {
  it('a child maps the same object by name: each side sees the other side\'s writes', async () => {
    const shm = named('byname', 8192);
    const initial = `hello by name from ${process.pid}`;
    writeText(shm.bytes(), 0, initial);
    // The child opens '/name' through the name without its leading slash: normalised.
    const child = nodeChild('shm-peer.mjs', ['name', shm.name!.slice(1)]);
    await converse(shm, child, initial);
  });

  it('a child maps a memfd inherited as fd 3', async () => {
    const shm = track(SharedMemory.create({ size: 8192 }));
    expect(shm.name).toBeNull();
    const initial = `hello through an inherited memfd from ${process.pid}`;
    writeText(shm.bytes(), 0, initial);
    const child = nodeChild('shm-peer.mjs', ['fd', '3'], { stdio: ['pipe', 'pipe', 'pipe', shm.fd] });
    await converse(shm, child, initial);
  });

  it('a child maps a memfd received over a UnixSocket (SCM_RIGHTS)', async () => {
    const shm = track(SharedMemory.create({ size: 12288 }));
    const initial = `hello through SCM_RIGHTS from ${process.pid}`;
    writeText(shm.bytes(), 0, initial);
    const path = uniqueSocketPath('s', dir);
    const listener = UnixSocket.listen(path);
    let conn: UnixSocket | null = null;
    try {
      const child = nodeChild('shm-peer.mjs', ['socket', path]);
      conn = await acceptWait(listener);
      expect(conn.send(new Uint8Array(8), shm.fd)).toBe(true);
      // The fd sent is a copy: ours stays open and usable.
      expect(fdIsOpen(shm.fd)).toBe(true);
      await converse(shm, child, initial);
    } finally {
      conn?.close();
      listener.close();
      unlinkSync(path);
    }
  });
});

describe('SharedMemory.create / open errors', () => {
  it('exclusive create of an existing name is EEXIST from shm_open, and leaves the object alone', () => {
    const shm = named('exists');
    shm.bytes()[0] = 42;
    const error = systemError(() => SharedMemory.create({ name: shm.name!, size: 4096 }));
    expect(error.code).toBe('EEXIST');
    expect(error.errno).toBeLessThan(0);
    expect(error.syscall).toBe('shm_open');
    expect(error.path).toBe(shm.name);
    expect(error.message).toContain(shm.name);
    // Explicit exclusive: true behaves the same.
    expect(systemError(() => SharedMemory.create({ name: shm.name!, size: 4096, exclusive: true })).code).toBe('EEXIST');
    // The failed call neither unlinked nor truncated the existing object.
    const again = track(SharedMemory.open(shm.name!));
    expect(again.size).toBe(4096);
    expect(again.bytes()[0]).toBe(42);
  });

  it('exclusive: false opens the existing object and resizes it', () => {
    const shm = named('nonexcl', 4096);
    shm.bytes()[100] = 7;
    const bigger = track(SharedMemory.create({ name: shm.name!, size: 16384, exclusive: false }));
    expect(bigger.size).toBe(16384);
    expect(bigger.bytes()[100]).toBe(7);
    bigger.bytes()[200] = 9;
    expect(shm.bytes()[200]).toBe(9);
    expect(statSync(`/dev/shm${shm.name}`).size).toBe(16384);
  });

  it('exclusive: false with a smaller size does not shrink an object that is mapped (no SIGBUS)', async () => {
    // In a child: if the object is truncated under an existing mapping, touching the mapping
    // past the new end kills the process with SIGBUS (and would do the same to QEMU or any
    // other process that has it mapped).
    const name = uniqueShmName('shrink');
    names.add(name);
    const child = nodeChild('shm-shrink.mjs', [name]);
    const exit = await child.exit();
    expect(exit, `messages: ${JSON.stringify(child.messages)}${child.diagnostics()}`).toEqual({ code: 0, signal: null });
    expect((await child.next('read')).value).toBe(77);
  });

  it('open of a missing name is ENOENT from shm_open', () => {
    const name = uniqueShmName('missing');
    const error = systemError(() => SharedMemory.open(name));
    expect(error.code).toBe('ENOENT');
    expect(error.errno).toBeLessThan(0);
    expect(error.syscall).toBe('shm_open');
    expect(error.path).toBe(name);
    expect(existsSync(`/dev/shm${name}`)).toBe(false);
    // unlink of a missing name too.
    const unlinkError = systemError(() => SharedMemory.unlink(name));
    expect(unlinkError.code).toBe('ENOENT');
    expect(unlinkError.syscall).toBe('shm_unlink');
  });

  it('named objects get mode 0600 by default and honour `mode`', () => {
    const shm = named('mode');
    expect(statSync(`/dev/shm${shm.name}`).mode & 0o777).toBe(0o600);
    const name = uniqueShmName('mode640');
    names.add(name);
    track(SharedMemory.create({ name, size: 4096, mode: 0o640 }));
    expect(statSync(`/dev/shm${name}`).mode & 0o777).toBe(0o640 & ~process.umask());
  });
});

describe('shm names', () => {
  it("a name without a leading slash is normalised ('abc' -> '/abc')", () => {
    const full = uniqueShmName('norm');
    const bare = full.slice(1);
    expect(normalizeShmName(bare)).toBe(full);
    expect(normalizeShmName(full)).toBe(full);
    names.add(full);
    const shm = track(SharedMemory.create({ name: bare, size: 4096 }));
    expect(shm.name).toBe(full);
    expect(existsSync(`/dev/shm${full}`)).toBe(true);
    const byFull = track(SharedMemory.open(full));
    expect(byFull.name).toBe(full);
    const byBare = track(SharedMemory.open(bare));
    expect(byBare.name).toBe(full);
    SharedMemory.unlink(bare);
    expect(existsSync(`/dev/shm${full}`)).toBe(false);
  });

  it('a 255-character name is accepted', () => {
    const prefix = `fnd-${process.pid}-`;
    const name = `/${prefix}${'n'.repeat(255 - prefix.length)}`;
    names.add(name);
    const shm = track(SharedMemory.create({ name, size: 4096 }));
    expect(shm.name).toBe(name);
  });

  it.each([
    ['inner slash', 'a/b'],
    ['inner slash after the leading one', '/a/b'],
    ['trailing slash', '/ab/'],
    ['empty', ''],
    ['just a slash', '/'],
    ['256 characters', 'x'.repeat(256)],
    ['256 characters after the slash', `/${'x'.repeat(256)}`],
    ['NUL', 'a\0b'],
  ])('rejects a name with %s as a RangeError naming the argument', (_what, name) => {
    for (const fn of [
      () => SharedMemory.create({ name, size: 4096 }),
      () => SharedMemory.open(name),
      () => SharedMemory.unlink(name),
      () => normalizeShmName(name),
    ]) {
      const error = thrown(fn);
      expect(error).toBeInstanceOf(RangeError);
      expect((error as Error).message).toMatch(/name/);
    }
  });

  it('limits the name in bytes, as the kernel does: 200 two-byte characters are a RangeError', () => {
    // 200 UTF-16 code units but 400 UTF-8 bytes: over NAME_MAX (255 bytes). Today validation
    // counts code units, lets it through, and glibc's shm_open fails with a bare EINVAL.
    const name = `/${'é'.repeat(200)}`;
    for (const fn of [() => SharedMemory.create({ name, size: 4096 }), () => SharedMemory.open(name), () => normalizeShmName(name)]) {
      const error = thrown(fn);
      expect(error).toBeInstanceOf(RangeError);
      expect((error as Error).message).toMatch(/name/);
    }
  });

  it('a multi-byte name within 255 bytes works', () => {
    const name = `${uniqueShmName('utf8')}-${'é'.repeat(50)}`;
    names.add(name);
    const shm = track(SharedMemory.create({ name, size: 4096 }));
    expect(shm.name).toBe(name);
    expect(existsSync(`/dev/shm${name}`)).toBe(true);
  });

  it('rejects a non-string name as a TypeError', () => {
    const error = thrown(() => SharedMemory.create({ name: 42 as unknown as string, size: 4096 }));
    expect(error).toBeInstanceOf(TypeError);
    expect((error as Error).message).toMatch(/^name/);
  });
});

describe('sizes', () => {
  it.each([
    ['0', 0, RangeError],
    ['negative', -4096, RangeError],
    ['fractional', 1.5, RangeError],
    ['NaN', Number.NaN, RangeError],
    ['Infinity', Number.POSITIVE_INFINITY, RangeError],
    ['a numeric string', '4096', TypeError],
    ['a bigint', 4096n, TypeError],
    ['missing', undefined, TypeError],
  ])('size %s is rejected before anything is created', (_what, size, kind) => {
    const name = uniqueShmName('size');
    for (const options of [{ name, size }, { size }]) {
      const error = thrown(() => SharedMemory.create(options as unknown as { size: number }));
      expect(error).toBeInstanceOf(kind);
      expect((error as Error).message).toMatch(/^size/);
    }
    expect(existsSync(`/dev/shm${name}`)).toBe(false);
  });

  it('size 2**60 (beyond MAX_SAFE_INTEGER) is a RangeError from validation, not a system error', () => {
    const name = uniqueShmName('huge');
    const error = thrown(() => SharedMemory.create({ name, size: 2 ** 60 }));
    expect(error).toBeInstanceOf(RangeError);
    expect(isSystemError(error)).toBe(false);
    expect((error as Error).message).toMatch(/^size/);
    expect(existsSync(`/dev/shm${name}`)).toBe(false);
  });

  it('a valid size too large to map (2**52) is ENOMEM from mmap, and the new object is unlinked', () => {
    const name = uniqueShmName('toolarge');
    names.add(name);
    const error = systemError(() => SharedMemory.create({ name, size: 2 ** 52 }));
    expect(error.code).toBe('ENOMEM');
    expect(error.syscall).toBe('mmap');
    expect(error.errno).toBeLessThan(0);
    expect(existsSync(`/dev/shm${name}`)).toBe(false);
    // The memfd flavour fails the same way (and closes its fd: see leaks.test.ts).
    expect(systemError(() => SharedMemory.create({ size: 2 ** 52 })).code).toBe('ENOMEM');
  });

  it('an odd size is kept exactly (not rounded to pages)', () => {
    const shm = track(SharedMemory.create({ size: 100 }));
    expect(shm.size).toBe(100);
    expect(shm.buffer.byteLength).toBe(100);
    expect(fstatSync(shm.fd).size).toBe(100);
  });

  it('options must be an object', () => {
    expect(thrown(() => SharedMemory.create(null as unknown as { size: number }))).toBeInstanceOf(TypeError);
    expect(thrown(() => SharedMemory.create(4096 as unknown as { size: number }))).toBeInstanceOf(TypeError);
  });
});

describe('SharedMemory.fromFd', () => {
  it('dup: true maps a duplicate and leaves the original fd usable', () => {
    const shm = track(SharedMemory.create({ size: 8192 }));
    shm.bytes()[0] = 1;
    const copy = SharedMemory.fromFd(shm.fd, { dup: true });
    try {
      expect(copy.fd).not.toBe(shm.fd);
      expect(copy.size).toBe(8192);
      expect(copy.bytes()[0]).toBe(1);
      copy.bytes()[1] = 2;
      expect(shm.bytes()[1]).toBe(2);
    } finally {
      copy.close();
    }
    // The original fd and mapping still work after the duplicate is closed.
    expect(fdIsOpen(shm.fd)).toBe(true);
    expect(fstatSync(shm.fd).size).toBe(8192);
    shm.bytes()[2] = 3;
    expect(shm.bytes()[2]).toBe(3);
    // And it can be mapped again.
    const again = track(SharedMemory.fromFd(shm.fd, { dup: true }));
    expect(again.bytes()[1]).toBe(2);
  });

  it('without dup the fd is taken over: close() closes it', () => {
    const shm = track(SharedMemory.create({ size: 4096 }));
    const raw = native.dupFd(shm.fd);
    const adopted = SharedMemory.fromFd(raw);
    expect(adopted.fd).toBe(raw);
    adopted.close();
    expect(fdIsOpen(raw)).toBe(false);
  });

  it('an empty object cannot be mapped: EINVAL from mmap, and an adopted fd is closed', () => {
    const raw = native.memfdCreate('empty');
    const error = systemError(() => SharedMemory.fromFd(raw));
    expect(error.code).toBe('EINVAL');
    expect(error.syscall).toBe('mmap');
    expect(error.message).toMatch(/empty/);
    expect(fdIsOpen(raw)).toBe(false);
  });

  it('a closed fd is EBADF', () => {
    const raw = native.memfdCreate('gone');
    native.closeFd(raw);
    expect(systemError(() => SharedMemory.fromFd(raw)).code).toBe('EBADF');
    expect(systemError(() => SharedMemory.fromFd(raw, { dup: true })).code).toBe('EBADF');
  });

  it.each([
    [-1, RangeError],
    [1.5, RangeError],
    ['3', TypeError],
  ])('fd %s is rejected as %o', (fd, kind) => {
    expect(thrown(() => SharedMemory.fromFd(fd as number))).toBeInstanceOf(kind);
  });
});

describe('bytes(offset, length)', () => {
  it('returns views of the requested window of the one mapping', () => {
    const shm = track(SharedMemory.create({ size: 4096 }));
    const all = shm.bytes();
    expect(all.byteLength).toBe(4096);
    expect(all.buffer).toBe(shm.buffer);
    const tail = shm.bytes(10);
    expect(tail.byteOffset).toBe(10);
    expect(tail.byteLength).toBe(4086);
    const window = shm.bytes(100, 16);
    expect(window.byteOffset).toBe(100);
    expect(window.byteLength).toBe(16);
    window[0] = 0xab;
    expect(all[100]).toBe(0xab);
    expect(shm.bytes(4096).byteLength).toBe(0);
    expect(shm.bytes(4096, 0).byteLength).toBe(0);
    expect(shm.bytes(0, 4096).byteLength).toBe(4096);
    expect(shm.bytes(4095, 1).byteLength).toBe(1);
  });

  it.each([
    ['offset past the end', [4097], RangeError, /^offset/],
    ['negative offset', [-1], RangeError, /^offset/],
    ['fractional offset', [1.5], RangeError, /^offset/],
    ['string offset', ['1'], TypeError, /^offset/],
    ['length past the end', [0, 4097], RangeError, /^length/],
    ['length past the end from an offset', [10, 4087], RangeError, /^length/],
    ['negative length', [0, -1], RangeError, /^length/],
    ['fractional length', [0, 0.5], RangeError, /^length/],
    ['string length', [0, '8'], TypeError, /^length/],
  ])('%s is rejected', (_what, args, kind, pattern) => {
    const shm = track(SharedMemory.create({ size: 4096 }));
    const error = thrown(() => (shm.bytes as (...a: unknown[]) => Uint8Array)(...args));
    expect(error).toBeInstanceOf(kind);
    expect((error as Error).message).toMatch(pattern);
  });
});
