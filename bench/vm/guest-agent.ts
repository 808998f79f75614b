/**
 * The bench's peer inside the guest (`ivshmem bench --vm`): Node driving the real
 * ivshmem-doorbell device through VFIO (GuestDevice), taking the same commands as a host
 * worker (agent.ts) through the mailbox in BAR2 (mailbox.ts). Around every cell it reads the
 * guest kernel's own count of the device's MSI-X interrupts (/proc/interrupts), the measure of
 * host→guest injections that is not the package's.
 *
 * Besides the cell commands: `node-pong` (answer every ring of vector 0 with a ring of the
 * host's vector 0, the bare round trip that the C pong repeats) and `exit`.
 *
 * Usage (in the guest, the device bound to vfio-pci): node dist/bench/vm/guest-agent.js 'PARAMS-JSON'
 */
import { readFileSync } from 'node:fs';
import { GuestDevice } from '../../lib/index.js';
import { Agent, type Instruments } from '../agent.js';
import type { Command } from '../protocol.js';
import { kernelInterrupts } from './counts.js';
import { Mailbox } from './mailbox.js';

export interface AgentParams {
  mailboxOffset: number;
  mailboxBytes: number;
  /** Deadline of the agent's whole life, ms: it exits (and the guest powers off) when it passes. */
  lifetimeMs: number;
}

export type VmCommand =
  | Command
  | { type: 'node-pong'; req: number; host: number }
  | { type: 'node-pong-end'; req: number }
  | { type: 'vm-exit'; req: number };

async function main(): Promise<void> {
  const params = JSON.parse(process.argv[2]!) as AgentParams;
  const quit = setTimeout(() => {
    process.stderr.write(`guest agent: lifetime of ${params.lifetimeMs} ms passed\n`);
    process.exit(3);
  }, params.lifetimeMs);
  const dev = GuestDevice.open({ bitmask: true });
  const address = dev.address;
  const interrupts = (): number => kernelInterrupts(readFileSync('/proc/interrupts', 'utf8'), address);
  let base = 0;
  let stores = 0;
  const instruments: Instruments = {
    arm: () => {
      base = interrupts();
      stores = dev.counters().doorbellWrites;
    },
    // The kernel's count, and the device's native count of Doorbell stores (the models' Totals have none).
    read: () => ({ interrupts: interrupts() - base, doorbellStores: dev.counters().doorbellWrites - stores }),
  };
  // Rings still in flight are slower to land under TCG than on the host.
  const agent = new Agent({ connect: async () => dev, instruments, settleMs: 50 });
  const mailbox = new Mailbox(dev.shm.buffer, params.mailboxOffset, params.mailboxBytes, 'guest', 2);
  let pong: { host: number; count: number; listener: (vector: number) => void } | null = null;

  const reply = (req: number, outcome: { ok: true; data: unknown } | { ok: false; error: string }): Promise<void> =>
    mailbox.send({ type: 'reply', req, ...outcome }, 60_000);
  const run = async (command: VmCommand): Promise<unknown> => {
    switch (command.type) {
      case 'node-pong': {
        if (pong !== null) throw new Error('node-pong already running');
        const host = command.host;
        const p = { host, count: 0, listener: (vector: number): void => {
          if (vector !== 0) return;
          dev.ring(host, 0);
          p.count++;
        } };
        pong = p;
        dev.on('interrupt', p.listener);
        return null;
      }
      case 'node-pong-end': {
        if (pong === null) throw new Error('node-pong-end without node-pong');
        dev.off('interrupt', pong.listener);
        const count = pong.count;
        pong = null;
        return { count };
      }
      case 'exit':
      case 'vm-exit':
        return null;
      default:
        return agent.handle(command);
    }
  };

  await mailbox.send({ type: 'hello', pid: process.pid, id: dev.id, address }, 60_000);
  for (;;) {
    const command = (await mailbox.receive(params.lifetimeMs, 'a command from the host')) as VmCommand;
    if (command.type === 'vm-exit') {
      // The reply is written into the device's memory: before the device closes.
      await reply(command.req, { ok: true, data: null });
      agent.close();
      dev.close();
      break;
    }
    if (command.type === 'exit') break;
    run(command).then(
      (data) => reply(command.req, { ok: true, data: data ?? null }),
      (error: unknown) =>
        reply(command.req, { ok: false, error: error instanceof Error ? `${error.message}${error.stack ? `\n${error.stack}` : ''}` : String(error) }),
    ).catch((error: unknown) => {
      process.stderr.write(`guest agent: cannot reply: ${String(error)}\n`);
      process.exit(4);
    });
  }
  clearTimeout(quit);
  mailbox.close();
}

main().catch((error: unknown) => {
  process.stderr.write(`guest agent: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
