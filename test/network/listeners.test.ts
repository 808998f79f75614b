/**
 * A peer's listeners and options: a throwing listener is the application's error, not a lost
 * server; bad options leave nothing open; the server leaves the process's signals alone.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { Peer, PeerServer } from '../../lib/index.js';
import { closeTracked, track, twoPeers } from '../helpers/network.js';
import { requireBuilt, uniqueSocketPath } from '../helpers/paths.js';

const run = promisify(execFile);

afterEach(closeTracked);

describe('peers', () => {
  it("a throwing 'peer-joined' listener is an uncaught exception, not a lost server", async () => {
    const index = requireBuilt();
    const script = `
      import { PeerServer, Peer } from ${JSON.stringify(index)};
      const server = PeerServer.listen({ socketPath: ${JSON.stringify(uniqueSocketPath('throw'))} });
      const a = await Peer.connect(server.socketPath);
      a.on('server-lost', () => { console.log('server-lost'); });
      a.on('peer-joined', () => { throw new Error('user listener bug'); });
      process.on('uncaughtException', (e) => {
        console.log('uncaught: ' + e.message + '; server lost: ' + a.serverLost);
        process.exit(0);
      });
      await Peer.connect(server.socketPath);
    `;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 });
    expect(stdout.trim()).toBe('uncaught: user listener bug; server lost: false');
  });
});

describe('connect with bad options', () => {
  it('Peer.connect with an invalid maxVectors rejects with a RangeError and leaves no socket open', async () => {
    const { server } = await twoPeers();
    const { readdirSync } = await import('node:fs');
    const fds = (): number => readdirSync('/proc/self/fd').length;
    const before = fds();
    await expect(Peer.connect(server.socketPath, { maxVectors: 0 })).rejects.toThrow(RangeError);
    expect(fds()).toBe(before);
  });
});

describe('signals', () => {
  it('PeerServer installs no signal handlers of its own (the CLI does, for its process)', () => {
    const before = { int: process.listenerCount('SIGINT'), term: process.listenerCount('SIGTERM') };
    const server = track(PeerServer.listen({ socketPath: uniqueSocketPath('signals') }));
    expect({ int: process.listenerCount('SIGINT'), term: process.listenerCount('SIGTERM') }).toEqual(before);
    server.close();
    expect({ int: process.listenerCount('SIGINT'), term: process.listenerCount('SIGTERM') }).toEqual(before);
  });
});
