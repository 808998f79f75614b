/**
 * A bench worker: one peer process, forked by the bench (pool.ts) as dist/bench/worker.js and
 * driven over IPC (protocol.ts); agent.ts does what the commands say, over a Peer of the
 * cell's PeerServer. It exits when told to, or when the parent goes away.
 */
import { Peer } from '../lib/index.js';
import { Agent } from './agent.js';
import type { Command, Reply } from './protocol.js';

if (process.send === undefined) {
  process.stderr.write('bench/worker.js is started by `ivshmem bench` (with an IPC channel), not by hand\n');
  process.exit(2);
}

const send = (reply: Reply): void => {
  process.send!(reply);
};

const agent = new Agent({ connect: (socketPath) => Peer.connect(socketPath, { bitmask: true, timeout: 10_000 }) });

process.on('message', (command: Command) => {
  if (command.type === 'exit') {
    agent.close();
    process.exit(0);
  }
  agent.handle(command).then(
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
