/**
 * The public surface through the package's own name (`exports`): the root and each subpath give
 * what they promise, nothing else is reachable (the bench above all), and the shipped .d.ts
 * type-check in a strict consumer project.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FIXTURES, REPO, requireBuilt } from '../helpers/paths.js';

/** The export names of `specifier`, imported by a child from the repository root, or its error code. */
function namesOf(specifier: string): { names?: string[]; code?: string } {
  const script = `import(${JSON.stringify(specifier)}).then((m) => console.log(JSON.stringify({ names: Object.keys(m).sort() })), (e) => console.log(JSON.stringify({ code: e.code })))`;
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO, encoding: 'utf8', timeout: 30_000 })) as { names?: string[]; code?: string };
}

describe('exports', () => {
  requireBuilt();

  it('ivshmem: peers, server, guest device, doorbell, channels, errors — no syscalls, codec or device models', () => {
    const { names } = namesOf('ivshmem');
    expect(names).toEqual(expect.arrayContaining(['Peer', 'PeerServer', 'BitmaskDoorbell', 'ChannelProducer', 'ChannelConsumer', 'createChannel', 'ErrorCodes', 'isIvshmemError', 'TooLargeError', 'DEFAULT_MAX_SIZE', 'GuestDevice', 'listDevices', 'DeviceError']));
    for (const lower of ['SharedMemory', 'EventFd', 'UnixSocket', 'FdWatcher', 'VfioDevice', 'PciRegisters', 'encodeMessage', 'ClientDecoder', 'readHeader', 'QemuDevice', 'Legacy2010Device']) {
      expect(names, lower).not.toContain(lower);
    }
  });

  it('ivshmem/sys, ivshmem/protocol, ivshmem/devices give their layer', () => {
    expect(namesOf('ivshmem/sys').names).toEqual(['EventFd', 'FdWatcher', 'LeaseKeeper', 'PciRegisters', 'SharedMemory', 'UnixSocket', 'VfioDevice', 'closeFd', 'normalizeShmName']);
    expect(namesOf('ivshmem/protocol').names).toEqual(expect.arrayContaining(['ClientDecoder', 'encodeMessage', 'decodeMessage', 'MESSAGE_SIZE', 'readHeader', 'headerLayout', 'readChannelHeader', 'CHANNEL_HEADER_BYTES', 'Bar0', 'doorbellValue', 'msixVectorsOf']));
    expect(namesOf('ivshmem/devices').names).toEqual(expect.arrayContaining(['QemuDevice', 'Legacy2010Device', 'BitmaskDevice', 'DeviceModel']));
  });

  it('nothing else is reachable: not the bench, the CLI or a module by path', () => {
    for (const hidden of ['ivshmem/bench', 'ivshmem/dist/bench/command.js', 'ivshmem/dist/cli/main.js', 'ivshmem/dist/lib/sys/binding.js', 'ivshmem/lib/index.ts']) {
      expect(namesOf(hidden).code, hidden).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');
    }
  });

  it('the shipped declarations type-check in a strict consumer (skipLibCheck off), @internal stripped', () => {
    const tsc = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', join(FIXTURES, 'consumer')], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(readFileSync(join(REPO, 'dist', 'lib', 'sys', 'shared-memory.d.ts'), 'utf8')).not.toContain('lowBuffer');
    expect(readFileSync(join(REPO, 'dist', 'lib', 'sys', 'registers.d.ts'), 'utf8')).not.toContain('registersHandle');
  });
});
