/** Waiting for a peer to become ringable on any endpoint: joins are announced asynchronously. */
import { ClosedError, TimeoutError } from '../core/errors.js';
import * as check from '../core/validate.js';
import type { Endpoint } from './endpoint.js';

/**
 * Resolves once `endpoint` can ring peer `id`; a TimeoutError after `timeout` ms, a ClosedError
 * (naming `owner`) if the endpoint closes first.
 */
export function waitForPeer(endpoint: Endpoint, id: number, timeout: number, owner: string): Promise<void> {
  check.integer('id', id, 0, 0xffff);
  check.integer('timeout', timeout, 0);
  if (endpoint.closed) return Promise.reject(new ClosedError(owner));
  if (endpoint.vectorsOf(id) > 0) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const done = (error?: Error): void => {
      clearTimeout(timer);
      endpoint.off('peer-joined', onJoined);
      endpoint.off('close', onClose);
      if (error === undefined) resolve();
      else reject(error);
    };
    const onJoined = (joined: number): void => {
      if (joined === id) done();
    };
    const onClose = (): void => done(new ClosedError(owner));
    const timer = setTimeout(() => done(new TimeoutError(`peer ${id} did not join within ${timeout} ms`)), timeout);
    endpoint.on('peer-joined', onJoined);
    endpoint.on('close', onClose);
  });
}
