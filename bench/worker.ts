/**
 * A bench worker: one peer process, forked by the bench (pool.ts) as dist/bench/worker.js and
 * driven over IPC (protocol.ts). It connects to the cell's PeerServer, plays the role it is
 * given through the design adapter it is given, and reports times, latencies and its device's
 * stats(). It exits when told to, or when the parent goes away.
 */
import { Peer } from '../lib/index.js';
import { isBaselineRole, startBaselineRole, type BaselineRole } from './baseline-roles.js';
import { clockFrom, settle, type Clock } from './clock.js';
import { createAdapter, type DesignAdapter } from './designs.js';
import type { Collected, Command, Connected, Finished, Reply } from './protocol.js';
import { isDesignRole, startRole, type RunningRole } from './workloads.js';

if (process.send === undefined) {
  process.stderr.write('bench/worker.js is started by `ivshmem bench` (with an IPC channel), not by hand\n');
  process.exit(2);
}

const send = (reply: Reply): void => {
  process.send!(reply);
};

let peer: Peer | null = null;
let adapter: DesignAdapter | null = null;
let role: RunningRole | null = null;
let baseline: BaselineRole | null = null;
let clock: Clock | null = null;

function closeCell(): void {
  adapter?.close();
  adapter = null;
  role = null;
  baseline = null;
}

async function handle(command: Exclude<Command, { type: 'exit' }>): Promise<unknown> {
  switch (command.type) {
    case 'connect': {
      closeCell();
      peer?.close();
      peer = await Peer.connect(command.socketPath, { bitmask: true, timeout: 10_000 });
      return { id: peer.id, pid: process.pid } satisfies Connected;
    }
    case 'know': {
      const p = live();
      await Promise.all(command.ids.filter((id) => id !== p.id).map((id) => p.waitForPeer(id, 10_000)));
      return null;
    }
    case 'prepare': {
      closeCell();
      clock = clockFrom(BigInt(command.epoch));
      // Whatever a previous cell left in flight is delivered now, before this cell counts.
      await settle(1);
      const spec = command.role;
      if (isBaselineRole(spec)) {
        baseline = await startBaselineRole(spec, clock, peer);
        await settle(1);
        baseline.arm();
        return null;
      }
      if (!isDesignRole(spec)) throw new Error(`unknown role ${(spec as { kind: string }).kind}`);
      const p = live();
      adapter = createAdapter(command.adapter, p);
      role = startRole({ peer: p, adapter, clock }, spec);
      // The receive loop's first pass (bitmask: a clear of the own bit) is set-up, not work.
      await settle(1);
      adapter.resetStats();
      return null;
    }
    case 'go': {
      if (baseline !== null) return (await baseline.go()) satisfies Finished;
      if (role === null) throw new Error('go before prepare');
      return (await role.go()) satisfies Finished;
    }
    case 'collect': {
      // Rings still in flight (an eventfd written after the last message was taken) are
      // delivered and counted: they happened.
      await settle(10);
      if (baseline !== null) {
        const collected = await baseline.stop();
        closeCell();
        return collected;
      }
      if (role === null || adapter === null) throw new Error('collect before prepare');
      await role.stop();
      const { totals, trapsByRegister } = adapter.stats();
      closeCell();
      return { totals, trapsByRegister } satisfies Collected;
    }
    case 'disconnect': {
      closeCell();
      peer?.close();
      peer = null;
      return null;
    }
  }
}

function live(): Peer {
  if (peer === null) throw new Error('not connected');
  return peer;
}

process.on('message', (command: Command) => {
  if (command.type === 'exit') {
    closeCell();
    peer?.close();
    process.exit(0);
  }
  handle(command).then(
    (data) => send({ type: 'reply', req: command.req, ok: true, data: data ?? null }),
    (error: unknown) =>
      send({
        type: 'reply',
        req: command.req,
        ok: false,
        error: error instanceof Error ? `${error.message}${error.stack ? `\n${error.stack}` : ''}` : String(error),
      }),
  );
});

// The bench went away (or killed us): nothing to report to.
process.on('disconnect', () => process.exit(0));

send({ type: 'hello', pid: process.pid });
