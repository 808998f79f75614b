/**
 * Helpers of the peer suites: a Peer in a child process (test/fixtures/network/peer-child.mjs)
 * commanded over JSON lines, and this process's fd count.
 */
import { readdirSync } from 'node:fs';
import { JsonChild, fixtureCommand, type ChildMessage } from '../helpers/children.js';
import { within } from '../helpers/wait.js';

export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

export interface Ring {
  peer: number;
  vector: number;
  times?: number;
}

type PeerChildOptions = { vectors?: number; timeout?: number; name?: string };

/** A `Peer` in a child process (test/fixtures/network/peer-child.mjs). */
export class PeerChild extends JsonChild {
  private constructor(socketPath: string, options: PeerChildOptions) {
    const { name = 'peer child', ...rest } = options;
    const [command, ...args] = fixtureCommand('network/peer-child.mjs', { socketPath, ...rest });
    super(command!, args, { name });
  }

  /** Spawns a peer child without waiting for it (see `whenReady()`). */
  static spawn(socketPath: string, options: PeerChildOptions = {}): PeerChild {
    return new PeerChild(socketPath, options);
  }

  /** Spawns a peer child and waits until it is connected (its 'ready' line). */
  static start(socketPath: string, options: PeerChildOptions = {}): Promise<PeerChild> {
    return PeerChild.spawn(socketPath, options).whenReady();
  }

  /** IDs announced to this child: those present at connect plus later joins, minus leaves. */
  knownPeers(): number[] {
    const known = new Set<number>((this.ready?.peers as { id: number }[] | undefined)?.map((p) => p.id) ?? []);
    for (const m of this.messages) {
      if (m.type === 'peer-joined') known.add(m.id as number);
      if (m.type === 'peer-left') known.delete(m.id as number);
    }
    return [...known].sort((a, b) => a - b);
  }

  waitForJoin(id: number): Promise<ChildMessage> {
    return this.waitFor((m) => m.type === 'peer-joined' && m.id === id, `peer-joined ${id}`);
  }

  waitForLeave(id: number): Promise<ChildMessage> {
    return this.waitFor((m) => m.type === 'peer-left' && m.id === id, `peer-left ${id}`);
  }

  /** Interrupt counts received per vector (sum of the coalesced counts), from the 'interrupt' lines. */
  interruptTotals(vectors: number): number[] {
    const totals = new Array<number>(vectors).fill(0);
    for (const m of this.messages) {
      if (m.type !== 'interrupt') continue;
      const v = m.vector as number;
      totals[v] = (totals[v] ?? 0) + (m.count as number);
    }
    return totals;
  }

  async ring(rings: Ring[]): Promise<number> {
    return (await this.request({ cmd: 'ring', rings })).rung as number;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    await this.request({ cmd: 'write', offset, base64: Buffer.from(data).toString('base64') });
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return Buffer.from((await this.request({ cmd: 'read', offset, length })).base64 as string, 'base64');
  }

  async peers(): Promise<{ id: number; vectors: number }[]> {
    return (await this.request({ cmd: 'peers' })).peers as { id: number; vectors: number }[];
  }

  /** Totals the child itself counted, per vector (absent vectors are 0). */
  async stats(vectors: number): Promise<number[]> {
    const counts = (await this.request({ cmd: 'stats' })).interrupts as Record<string, number>;
    return Array.from({ length: vectors }, (_, v) => counts[String(v)] ?? 0);
  }

  /** Asks the child to close its peer and exit; resolves once it has exited. */
  async quit(): Promise<void> {
    await this.request({ cmd: 'quit' });
    await within(this.exited, `${this.name} to exit after quit`);
  }
}
