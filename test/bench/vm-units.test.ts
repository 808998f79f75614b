/**
 * The VM part's pure pieces: counting Doorbell writes in QEMU's trace (whole file and as it
 * grows), the guest kernel's interrupt lines, the mailbox between host and guest, and the plan
 * of the cells. The real thing runs in test/guest/bench-vm.test.ts.
 */
import { appendFileSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { countDoorbellWrites, kernelInterrupts, TraceReader } from '../../bench/vm/counts.js';
import { Mailbox, mailboxBytes } from '../../bench/vm/mailbox.js';
import { crossings, planVmCell, vmCells } from '../../bench/vm/run-vm.js';
import { resolveOptions } from '../../bench/options.js';
import { Scratch } from '../helpers/paths.js';

const scratch = new Scratch();
afterEach(() => scratch.cleanup());

// As QEMU 7.2's log backend writes them (pid@seconds: prefix), BAR0 at 0xfebf1000.
const write = (addr: number, value: number, name = 'ivshmem-mmio'): string =>
  `1234@1764680000.123456:memory_region_ops_write cpu 1 mr 0x55f0 addr 0x${addr.toString(16)} value 0x${value.toString(16)} size 4 name '${name}'`;

describe('QEMU trace', () => {
  it('counts writes to BAR0 + 0xc of ivshmem-mmio only, per destination', () => {
    const lines = [
      write(0xfebf100c, 3 << 16),
      write(0xfebf100c, (3 << 16) | 1),
      write(0xfebf100c, 5 << 16),
      write(0xfebf1000, 0xffffffff), // IntrMask
      write(0xfebf1004, 0), // IntrStatus
      write(0x3f8 + 0x0c, 0, 'serial'), // another device at an offset of 0xc
      'memory_region_ops_read cpu 1 mr 0x55f0 addr 0xfebf1008 value 0x3 size 4 name \'ivshmem-mmio\'',
    ];
    expect(countDoorbellWrites(lines)).toEqual({ writes: 3, byDest: { 3: 2, 5: 1 } });
  });

  it('reads a growing file from where it left off, a half-written last line waiting for its end', () => {
    const file = scratch.path('trace', 'qemu');
    writeFileSync(file, `${write(0xfebf100c, 1 << 16)}\n${write(0xfebf100c, 1 << 16).slice(0, 40)}`);
    using reader = new TraceReader(file);
    expect(reader.read().writes).toBe(1);
    appendFileSync(file, `${write(0xfebf100c, 1 << 16).slice(40)}\n${write(0xfebf100c, 2 << 16)}\n`);
    expect(reader.read()).toEqual({ writes: 2, byDest: { 1: 1, 2: 1 } });
    expect(reader.read().writes).toBe(0);
    reader.close();
    reader.close();
    expect(() => reader.read()).toThrow(/closed/);
  });
});

describe('/proc/interrupts', () => {
  it('sums the vfio-msix lines of the device over CPUs and vectors', () => {
    const text = [
      '           CPU0       CPU1',
      '  0:         42          0   IO-APIC   2-edge      timer',
      ' 24:          7         12   PCI-MSIX-0000:00:02.0   0-edge      vfio-msix[0](0000:00:02.0)',
      ' 25:          1          0   PCI-MSIX-0000:00:02.0   1-edge      vfio-msix[1](0000:00:02.0)',
      ' 26:        100          0   PCI-MSIX-0000:00:03.0   0-edge      vfio-msix[0](0000:00:03.0)',
      ' 27:          5          5   PCI-MSIX-0000:00:02.0   2-edge      virtio0-config',
    ].join('\n');
    expect(kernelInterrupts(text, '0000:00:02.0')).toBe(20);
    expect(kernelInterrupts(text, '0000:00:04.0')).toBe(0);
  });
});

describe('mailbox', () => {
  it('carries JSON both ways, one message at a time, the writer waiting for the reader', async () => {
    const buffer = new ArrayBuffer(64 + mailboxBytes(256));
    const host = new Mailbox(buffer, 64, 256, 'host');
    const guest = new Mailbox(buffer, 64, 256, 'guest');
    host.reset();
    expect(guest.take()).toBeUndefined();
    await host.send({ type: 'go', n: 1 }, 1000);
    const second = host.send({ type: 'go', n: 2 }, 1000); // waits until the first is taken
    expect(guest.take()).toEqual({ type: 'go', n: 1 });
    await second;
    expect(await guest.receive(1000)).toEqual({ type: 'go', n: 2 });
    await guest.send({ type: 'reply', ok: true }, 1000);
    expect(await host.receive(1000)).toEqual({ type: 'reply', ok: true });
    await expect(host.receive(20, 'nothing')).rejects.toThrow(/timed out .* nothing/);
    await expect(host.send({ big: 'x'.repeat(300) }, 100)).rejects.toThrow(/> 256/);
    await host.send({ n: 3 }, 100);
    await expect(host.send({ n: 4 }, 30)).rejects.toThrow(/does not take its mailbox/);
    host.close();
    await expect(host.receive(1000)).rejects.toThrow(/closed/);
  });
});

describe('the VM cells', () => {
  const options = resolveOptions({ quick: true });

  it('are every workload × qemu and bitmask, and the bitmask with its receiver busy-polling', () => {
    const names = vmCells(options).map((c) => `${c.workload}/${c.design}/${c.busyPoll}`);
    expect(names).toEqual([
      'ping-pong/qemu/none', 'ping-pong/bitmask/none', 'ping-pong/bitmask/guest',
      'stream-to-guest/qemu/none', 'stream-to-guest/bitmask/none', 'stream-to-guest/bitmask/guest',
      'stream-to-host/qemu/none', 'stream-to-host/bitmask/none', 'stream-to-host/bitmask/host',
      'fan-in/qemu/none', 'fan-in/bitmask/none', 'fan-in/bitmask/guest',
    ]);
    expect(vmCells({ ...options, designs: ['qemu'] }).every((c) => c.design === 'qemu')).toBe(true);
  });

  it('put the guest last, with its own adapter when it busy-polls, and count crossings per direction', () => {
    const fan = vmCells(options).find((c) => c.workload === 'fan-in' && c.busyPoll === 'guest')!;
    const plan = planVmCell(fan, options, [1, 2], 7, 4096);
    expect(plan.roles.map((r) => r.kind)).toEqual(['producer', 'producer', 'consumer']);
    expect(plan.adapters).toEqual(['bitmask', 'bitmask', 'bitmask-busypoll']);
    const toHost = vmCells(options).find((c) => c.workload === 'stream-to-host' && c.busyPoll === 'host')!;
    expect(planVmCell(toHost, options, [1], 7, 4096).adapters).toEqual(['bitmask-busypoll', 'bitmask']);
    expect(crossings(toHost, 100)).toEqual({ toHost: 100, toGuest: 0 });
    expect(crossings(vmCells(options)[0]!, 100)).toEqual({ toHost: 50, toGuest: 50 });
  });
});
