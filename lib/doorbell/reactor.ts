/**
 * One receive loop per peer for everything that waits on its bitmask bit (channel readers,
 * producers waiting for space). The pending bit means "this peer will look at all its work
 * before it sleeps", so the loop keeps it set while a reader is still busy with messages
 * (senders stay suppressed), and clears it — then re-checks — only when every source is idle
 * or a writer waits for space (which only a ring from the other side can announce).
 */
import { BitmaskDoorbell, hasReceiveLoop } from './bitmask-doorbell.js';
import { InUseError } from '../core/errors.js';
import type { Endpoint } from '../endpoint/endpoint.js';

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
  /** The loop failed (or could not start): the source is out of the reactor; fail its wait. */
  fail(error: Error): void;
}

const reactors = new WeakMap<Endpoint, Reactor>();

export class Reactor {
  readonly doorbell: BitmaskDoorbell;
  readonly #sources = new Set<Source>();
  #poke: (() => void) | null = null;
  #poked = false;
  #running = false;
  #stop = new AbortController();

  private constructor(readonly peer: Endpoint) {
    this.doorbell = new BitmaskDoorbell(peer);
    peer.once('close', () => this.#stop.abort());
  }

  /**
   * The peer's reactor (one per peer, created on first use). InUseError if the peer's pending
   * bit is already served by a loop of its own (a BitmaskDoorbell's notifications or serve).
   */
  static of(peer: Endpoint): Reactor {
    let reactor = reactors.get(peer);
    if ((reactor === undefined || !reactor.#running) && hasReceiveLoop(peer)) throw inUse(peer);
    if (reactor === undefined) {
      reactor = new Reactor(peer);
      reactors.set(peer, reactor);
    }
    return reactor;
  }

  add(source: Source): void {
    if (!this.#running && hasReceiveLoop(this.peer)) {
      // Another loop took the bit since this source's channel was made: it cannot be served.
      source.fail(inUse(this.peer));
      return;
    }
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
    let failure: Error | null = null;
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
    } catch (error) {
      failure = error instanceof Error ? error : new Error(String(error));
    } finally {
      this.#running = false;
    }
    if (failure !== null) {
      // Never start again by itself: a loop that fails at once would restart in a tight cycle
      // of microtasks and freeze the process. Its sources get the error; a new wait starts anew.
      const failed = [...this.#sources];
      this.#sources.clear();
      for (const s of failed) s.fail(failure);
      return;
    }
    // Sources added while the loop was ending (it ends when it finds none).
    if (this.#sources.size > 0 && !this.#stop.signal.aborted) void this.#run();
  }
}

function inUse(peer: Endpoint): InUseError {
  return new InUseError(
    `peer ${peer.id} already has a receive loop of its own on its pending bit (BitmaskDoorbell notifications or serve): ` +
      "its channels need the peer's one loop (end that loop first, or put that work into channels too)",
  );
}
