/** A hostile ivshmem server for the peer-side tests of test/network/. */
import { ftruncateSync } from 'node:fs';
import { native } from '../../lib/sys/binding.js';
import { EventFd, UnixSocket } from '../../lib/sys/index.js';
import { encodeMessage, greeting, peerVectors } from '../../lib/protocol/index.js';
import { uniqueSocketPath } from '../helpers/paths.js';

/**
 * Listens in this process and greets every client as peer 0 with `shmFd` (taken over: closed
 * by the returned close) as the memory and one eventfd, as QEMU's server would; nothing more.
 * The server holds one native socket and one eventfd per client it accepted.
 */
export function hostileServer(shmFd: number): { socketPath: string; close: () => void } {
  return pacedServer(shmFd, 0, [{ afterMs: 0, peer: 0, count: 1 }]);
}

/** A memfd of `size` bytes, sparse: no memory is used until touched. */
export function sparseMemfd(size: number): number {
  const fd = native.memfdCreate('hostile');
  ftruncateSync(fd, size);
  return fd;
}

/**
 * One part of a paced connect sequence: `count` vectors of peer `peer`, `afterMs` after the
 * part before (0: at once, with it).
 */
export interface PacedPart {
  afterMs: number;
  peer: number;
  count: number;
}

/**
 * Listens in this process and greets every client as peer `self` with `shmFd` (taken over) as
 * the memory, then sends `parts` one after another, each after its pause: a server that a
 * loaded machine stops in the middle of a connect sequence. Every vector is a new eventfd.
 */
export function pacedServer(shmFd: number, self: number, parts: readonly PacedPart[]): { socketPath: string; close: () => void } {
  const socketPath = uniqueSocketPath('paced');
  const listener = UnixSocket.listen(socketPath);
  const watcher = listener.watch();
  const clients: UnixSocket[] = [];
  const eventfds: EventFd[] = [];
  const timers = new Set<NodeJS.Timeout>();
  // From part `i` on; `waited`: part i's pause has been taken.
  const sendFrom = (client: UnixSocket, i: number, waited = false): void => {
    for (; i < parts.length; i++, waited = false) {
      const part = parts[i]!;
      if (part.afterMs > 0 && !waited) {
        const timer = setTimeout(() => {
          timers.delete(timer);
          sendFrom(client, i, true);
        }, part.afterMs);
        timers.add(timer);
        return;
      }
      const fds = Array.from({ length: part.count }, () => {
        const e = new EventFd();
        eventfds.push(e);
        return e.fd;
      });
      for (const m of peerVectors(part.peer, fds)) client.send(encodeMessage(m.value), m.fd);
    }
  };
  watcher.on('readable', () => {
    for (let client = listener.accept(); client !== null; client = listener.accept()) {
      clients.push(client);
      for (const m of greeting(self, shmFd)) client.send(encodeMessage(m.value), m.fd);
      sendFrom(client, 0);
    }
  });
  watcher.start();
  const close = (): void => {
    for (const t of timers) clearTimeout(t);
    watcher.close();
    for (const c of clients) c.close();
    listener.close();
    for (const e of eventfds) e.close();
    native.closeFd(shmFd);
  };
  return { socketPath, close };
}
