/**
 * `ivshmem guest` on the host: there is no ivshmem PCI device here, so these check the command
 * line, the outputs for "none" and the failures. The in-guest behaviour (a real device, VFIO)
 * is tested in a VM (test/guest/).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../fixtures/cli/child.js';
import { killAllChildren } from '../helpers/children.js';

afterEach(() => killAllChildren());

const PCI_DEVICES = '/sys/bus/pci/devices';
const NO_DEVICE = 'no ivshmem device (1af4:1110) in this system: start QEMU with -device ivshmem-doorbell,chardev=… (or ivshmem-plain)';

function idOf(address: string): string {
  const read = (name: string): string => readFileSync(join(PCI_DEVICES, address, name), 'utf8').trim().replace(/^0x/, '');
  return `${read('vendor')}:${read('device')}`;
}

function pciDevices(): string[] {
  try {
    return readdirSync(PCI_DEVICES).sort();
  } catch {
    return [];
  }
}

/** These tests are about a system without ivshmem devices (a host, or a VM without one). */
const hasIvshmem = pciDevices().some((a) => idOf(a) === '1af4:1110');
/** A PCI device of this system that is not an ivshmem one, if there is any. */
const otherDevice = pciDevices().find((a) => idOf(a) !== '1af4:1110');

describe('ivshmem guest', () => {
  it('--help lists list, info and peer', async () => {
    const result = await run(['guest', '--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^\s+list\b/m);
    expect(result.stdout).toMatch(/^\s+info\b.*\[address\]/m);
    expect(result.stdout).toMatch(/^\s+peer\b/m);
  });

  it('is listed by ivshmem --help', async () => {
    const result = await run(['--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^\s+guest\b.*inside a VM/m);
  });

  it('peer --help describes every flag, the commands and the JSON events, and that it binds vfio-pci itself', async () => {
    const result = await run(['guest', 'peer', '--help']);
    expect(result.code).toBe(0);
    for (const text of ['--json', '--device <address>', '--interrupts <mode>', '--vectors <n>', '--bitmask', '--peer <id[:vectors]>', 'ring PEER [VECTOR]', 'ring all', 'read OFFSET LENGTH', 'write OFFSET HEX', 'quit', '{"event":"connected","id":3,"vectors":2,"size":4194304,"peers":[{"id":0,"vectors":2}]}', '{"event":"interrupt","vector":1,"count":1}']) {
      expect(result.stdout).toContain(text);
    }
    expect(result.stdout).toMatch(/binds the device to vfio-pci\s+itself/);
    expect(result.stdout).not.toContain('{"event":"server-lost"}');
  });

  it('an unknown guest subcommand is a usage error', async () => {
    const result = await run(['guest', 'frobnicate']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("error: unknown command 'frobnicate'");
    expect(result.stderr).toContain("(run 'ivshmem guest --help' for usage)");
  });
});

describe.skipIf(hasIvshmem)('ivshmem guest on a system without ivshmem devices', () => {
  it('list says there are none, with status 0', async () => {
    const result = await run(['guest', 'list']);
    expect(result).toMatchObject({ code: 0, stdout: 'no ivshmem devices (1af4:1110)', stderr: '' });
  });

  it('list --json prints an empty array', async () => {
    const result = await run(['guest', 'list', '--json']);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(result.stdout)).toEqual([]);
    expect(result.stdout).toBe('[]');
  });

  it('info without an address fails: there is no device', async () => {
    for (const args of [['guest', 'info'], ['guest', 'info', '--json']]) {
      const result = await run(args);
      expect(result, args.join(' ')).toMatchObject({ code: 1, stdout: '', stderr: `ivshmem: ${NO_DEVICE}` });
    }
  });

  it('info of an address that is no device fails naming it', async () => {
    // Slot 0x99 is beyond PCI's 32 slots: not an address at all.
    const beyond = await run(['guest', 'info', '00:99.0']);
    expect(beyond).toMatchObject({
      code: 1,
      stdout: '',
      stderr: 'ivshmem: "00:99.0" is not a PCI address (DDDD:BB:DD.F, e.g. 0000:00:02.0)',
    });
  });

  it.skipIf(existsSync(join(PCI_DEVICES, '0000:00:1f.7')))('info of a well-formed address without a device fails naming it', async () => {
    const result = await run(['guest', 'info', '00:1f.7']);
    expect(result).toMatchObject({
      code: 1,
      stdout: '',
      stderr: 'ivshmem: no PCI device 0000:00:1f.7 (/sys/bus/pci/devices/0000:00:1f.7 does not exist)',
    });
  });

  it.skipIf(otherDevice === undefined)('info of a PCI device that is not ivshmem fails saying what it is', async () => {
    const result = await run(['guest', 'info', otherDevice!]);
    expect(result).toMatchObject({
      code: 1,
      stdout: '',
      stderr: `ivshmem: PCI device ${otherDevice} is ${idOf(otherDevice!)}, not an ivshmem device (1af4:1110)`,
    });
  });

  it('info of something that is not an address fails with the bad-address message', async () => {
    const result = await run(['guest', 'info', 'nonsense']);
    expect(result).toMatchObject({
      code: 1,
      stdout: '',
      stderr: 'ivshmem: "nonsense" is not a PCI address (DDDD:BB:DD.F, e.g. 0000:00:02.0)',
    });
  });

  it('peer --json fails with status 1 and one error event saying what is missing', async () => {
    for (const args of [['guest', 'peer', '--json'], ['guest', 'peer', '--json', '--interrupts', 'none']]) {
      const result = await run(args);
      expect(result.code, args.join(' ')).toBe(1);
      expect(result.stdout.split('\n').map((l) => JSON.parse(l) as unknown)).toEqual([{ event: 'error', message: NO_DEVICE }]);
      expect(result.stderr).toBe(`ivshmem: ${NO_DEVICE}`);
    }
  });

  it('peer without --json fails with status 1 and the message on stderr only', async () => {
    const result = await run(['guest', 'peer']);
    expect(result).toMatchObject({ code: 1, stdout: '', stderr: `ivshmem: ${NO_DEVICE}` });
  });

  it('peer --device with a bad address reports it as the error event', async () => {
    const result = await run(['guest', 'peer', '--json', '--device', 'nonsense']);
    const message = '"nonsense" is not a PCI address (DDDD:BB:DD.F, e.g. 0000:00:02.0)';
    expect(result.code).toBe(1);
    expect(result.stdout.split('\n').map((l) => JSON.parse(l) as unknown)).toEqual([{ event: 'error', message }]);
    expect(result.stderr).toBe(`ivshmem: ${message}`);
  });
});

describe('ivshmem guest peer usage errors (status 2, before any device is looked for)', () => {
  const usage = "(run 'ivshmem guest peer --help' for usage)";

  it('refuses --peer with --bitmask (the peers are the live bits then)', async () => {
    const result = await run(['guest', 'peer', '--bitmask', '--peer', '1']);
    expect(result).toMatchObject({
      code: 2,
      stdout: '',
      stderr: `error: option '--peer <id[:vectors]>' cannot be used with option '--bitmask'\n${usage}`,
    });
  });

  it('refuses a --peer that is not ID or ID:VECTORS', async () => {
    for (const bad of ['x', '1:0', '70000', '1:2:3', '-1']) {
      const result = await run(['guest', 'peer', '--json', `--peer=${bad}`]);
      expect(result, bad).toMatchObject({
        code: 2,
        stdout: '',
        stderr: `error: option '--peer <id[:vectors]>' argument '${bad}' is invalid. Expected ID or ID:VECTORS (ID 0 to 65535, VECTORS 1 to 65535), e.g. 1 or 1:2.\n${usage}`,
      });
    }
  });

  it('refuses an --interrupts mode other than vfio or none', async () => {
    const result = await run(['guest', 'peer', '--interrupts', 'msi']);
    expect(result).toMatchObject({
      code: 2,
      stdout: '',
      stderr: `error: option '--interrupts <mode>' argument 'msi' is invalid. Allowed choices are vfio, none.\n${usage}`,
    });
  });
});
