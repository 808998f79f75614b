/**
 * The host's side of the agent in the guest: a CellWorker (session.ts) whose requests go
 * through the mailbox (mailbox.ts) instead of IPC. Replies are polled for only while a request
 * is outstanding, so an idle bench adds nothing to the guest's timings.
 */
import { BenchError, type Request } from '../pool.js';
import type { CellWorker } from '../session.js';
import type { Guest } from './qemu-guest.js';
import { Mailbox } from './mailbox.js';

type Pending = { resolve: (data: unknown) => void; reject: (error: Error) => void; what: string };

export interface Hello {
  type: 'hello';
  pid: number;
  id: number;
  address: string;
}

/** Requests the guest agent takes beyond the cell commands (guest-agent.ts). */
export type VmRequest = Request | { type: 'node-pong'; host: number } | { type: 'node-pong-end' } | { type: 'vm-exit' };

export class GuestWorker implements CellWorker {
  readonly index: number;
  readonly #guest: Guest;
  readonly #mailbox: Mailbox;
  readonly #pending = new Map<number, Pending>();
  #nextReq = 1;
  #sending: Promise<void> = Promise.resolve();
  #polling = false;
  #failed: Error | null = null;
  #hello: Hello | null = null;

  constructor(guest: Guest, buffer: ArrayBuffer, offset: number, bytes: number, index: number) {
    this.#guest = guest;
    this.index = index;
    // The host zeroed the mailbox before the guest booted: the agent may have written already.
    this.#mailbox = new Mailbox(buffer, offset, bytes, 'host', 1);
  }

  /** The agent's greeting (its peer ID and PCI address), once it runs in the guest. */
  async hello(timeoutMs: number): Promise<Hello> {
    const exited = this.#guest.result().then(() => {
      throw new BenchError(`the guest powered off before its agent started${this.#guest.diagnostics()}`);
    });
    exited.catch(() => {});
    const message = (await Promise.race([this.#mailbox.receive(timeoutMs, 'the agent in the guest to start'), exited])) as Hello;
    if (message.type !== 'hello') throw new BenchError(`the guest agent said ${JSON.stringify(message).slice(0, 200)} before hello`);
    this.#hello = message;
    return message;
  }

  /** QEMU's PID (the guest's processes are not the host's). */
  get pid(): number {
    return this.#guest.pid;
  }

  get alive(): boolean {
    return this.#failed === null && this.#guest.running;
  }

  get id(): number {
    if (this.#hello === null) throw new BenchError('the guest agent has not said hello');
    return this.#hello.id;
  }

  request<T>(command: VmRequest, what: string = command.type): Promise<T> {
    if (this.#failed !== null) return Promise.reject(this.#failed);
    // A session's 'disconnect' would close the device that carries the mailbox: the guest keeps its
    // connection for the whole run, and leaves with 'vm-exit'.
    if (command.type === 'disconnect') return Promise.resolve(null as T);
    const req = this.#nextReq++;
    const promise = new Promise<T>((resolve, reject) => {
      this.#pending.set(req, { resolve: resolve as (d: unknown) => void, reject, what });
    });
    this.#sending = this.#sending
      .then(() => this.#mailbox.send({ ...command, req }, 30_000))
      .catch((error: unknown) => this.#fail(error instanceof Error ? error : new BenchError(String(error))));
    this.#poll();
    return promise;
  }

  #poll(): void {
    if (this.#polling) return;
    this.#polling = true;
    const tick = (): void => {
      try {
        for (let m = this.#mailbox.take(); m !== undefined; m = this.#mailbox.take()) this.#reply(m as { req: number; ok: boolean; data?: unknown; error?: string });
      } catch (error) {
        this.#fail(error instanceof Error ? error : new BenchError(String(error)));
      }
      if (!this.#guest.running) this.#fail(new BenchError(`the guest stopped${this.#guest.diagnostics()}`));
      if (this.#pending.size === 0) {
        this.#polling = false;
        return;
      }
      setTimeout(tick, 1);
    };
    setTimeout(tick, 1);
  }

  #reply(m: { req: number; ok: boolean; data?: unknown; error?: string }): void {
    const pending = this.#pending.get(m.req);
    if (pending === undefined) return;
    this.#pending.delete(m.req);
    if (m.ok) pending.resolve(m.data ?? null);
    else pending.reject(new BenchError(`guest agent, ${pending.what}: ${m.error}`));
  }

  #fail(error: Error): void {
    this.#failed ??= error;
    for (const p of this.#pending.values()) p.reject(this.#failed);
    this.#pending.clear();
  }

  /** Ends every wait (the guest is killed by its owner). Idempotent. */
  close(): void {
    this.#fail(new BenchError('closed'));
    this.#mailbox.close();
  }
}
