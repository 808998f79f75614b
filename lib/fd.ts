/** Raw fd helpers for fds received over a socket that no wrapper has adopted. */
import { native } from './binding.js';
import * as check from './validate.js';

/** Closes an fd that this process owns but no wrapper holds (e.g. one it will not adopt). */
export function closeFd(fd: number): void {
  native.closeFd(check.fd('fd', fd));
}
