/**
 * One receive loop per peer for everything that waits on its bitmask bit (channel readers,
 * producers waiting for space). The pending bit means "this peer will look at all its work
 * before it sleeps", so the loop keeps it set while a reader is still busy with messages
 * (senders stay suppressed), and clears it — then re-checks — only when every source is idle
 * or a writer waits for space (which only a ring from the other side can announce).
 */
import { BitmaskDoorbell } from './bitmask-doorbell.js';
import type { Peer } from './peer.js';

export type SourceState =
  /** Something to hand over now (a message to a waiting reader, space to a waiting writer). */
  | 'actionable'
  /** Work is under way locally (a reader busy with messages); no ring needed to come back. */
  | 'holding'
  /** Waiting on the other side (a writer with no space): must be woken by a ring. */
  | 'waiting'
  | 'idle';

export interface Source {
  state(): SourceState;
  /** Hand over what is actionable (resolve the waiting reader or writer). */
  dispatch(): void;
}

const reactors = new WeakMap<Peer, Reactor>();

export class Reactor {
  readonly doorbell: BitmaskDoorbell;
  readonly #sources = new Set<Source>();
  #poke: (() => void) | null = null;
  #poked = false;
  #running = false;
  #stop = new AbortController();

  private constructor(readonly peer: Peer) {
    this.doorbell = new BitmaskDoorbell(peer);
    peer.once('close', () => this.#stop.abort());
  }

  /** The peer's reactor (one per peer, created on first use). */
  static of(peer: Peer): Reactor {
    let reactor = reactors.get(peer);
    if (reactor === undefined) {
      reactor = new Reactor(peer);
      reactors.set(peer, reactor);
    }
    return reactor;
  }

  add(source: Source): void {
    this.#sources.add(source);
    if (!this.#running) void this.#run();
    this.poke();
  }

  remove(source: Source): void {
    this.#sources.delete(source);
    this.poke();
  }

  /** A source's local state changed: look again. */
  poke(): void {
    this.#poked = true;
    const poke = this.#poke;
    this.#poke = null;
    poke?.();
  }

  #states(): { actionable: boolean; holding: boolean; waiting: boolean } {
    let actionable = false;
    let holding = false;
    let waiting = false;
    for (const s of this.#sources) {
      const state = s.state();
      if (state === 'actionable') actionable = true;
      else if (state === 'holding') holding = true;
      else if (state === 'waiting') waiting = true;
    }
    return { actionable, holding, waiting };
  }

  #hasWork = (): boolean => {
    this.#poked = false;
    const { actionable, holding, waiting } = this.#states();
    return actionable || (holding && !waiting);
  };

  async #run(): Promise<void> {
    this.#running = true;
    try {
      for await (const _ of this.doorbell.notifications(this.#hasWork, { signal: this.#stop.signal })) {
        if (this.#sources.size === 0) break;
        const { actionable } = this.#states();
        if (actionable) {
          for (const s of [...this.#sources]) if (s.state() === 'actionable') s.dispatch();
          // Let the woken readers and writers run before looking again.
          await new Promise<void>((resolve) => setImmediate(resolve));
          continue;
        }
        // Holding: keep the bit set until a local change (a reader comes back, a writer waits).
        if (!this.#poked) await new Promise<void>((resolve) => (this.#poke = resolve));
      }
    } finally {
      this.#running = false;
      if (this.#sources.size > 0 && !this.#stop.signal.aborted) void this.#run();
    }
  }
}
