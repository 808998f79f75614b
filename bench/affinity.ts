/**
 * CPU placement of the worker processes. On a VM, waking a process on another (halted) vCPU
 * costs an order of magnitude more than a switch on the same one, so an unpinned ping-pong
 * measures the scheduler's placement luck. A cell with no more processes than CPUs gets one
 * CPU per process (`taskset -p`, after the fork); an oversubscribed cell is left to the
 * scheduler (all allowed CPUs). Without taskset the run goes on unpinned, and says so.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/** The CPUs this process may run on (from /proc/self/status), in order. */
export function allowedCpus(): number[] {
  try {
    const line = readFileSync('/proc/self/status', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Cpus_allowed_list:'));
    if (line !== undefined) {
      const cpus = parseCpuList(line.split(':')[1]!.trim());
      if (cpus.length > 0) return cpus;
    }
  } catch {
    // not Linux procfs: fall through
  }
  return Array.from({ length: availableParallelism() }, (_, i) => i);
}

/** "0-3,6,8-9" -> [0, 1, 2, 3, 6, 8, 9]. */
export function parseCpuList(text: string): number[] {
  const out: number[] = [];
  for (const part of text.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (m === null) continue;
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    for (let c = from; c <= to; c++) out.push(c);
  }
  return out;
}

function taskset(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('taskset', args, { timeout: 5000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error((error as NodeJS.ErrnoException).code === 'ENOENT' ? 'taskset not found (util-linux)' : stderr.trim() || error.message));
      else resolve();
    });
  });
}

export type Placement = 'one CPU each' | 'scheduler';

/**
 * Pins `pids[i]` to its own CPU when there are enough CPUs, else lets them run anywhere.
 * Returns the placement, or throws with the reason pinning is impossible (the caller reports it).
 */
export async function place(pids: readonly number[]): Promise<Placement> {
  const cpus = allowedCpus();
  if (pids.length <= cpus.length) {
    await Promise.all(pids.map((pid, i) => taskset(['-p', '-c', String(cpus[i]), String(pid)])));
    return 'one CPU each';
  }
  const all = cpus.join(',');
  await Promise.all(pids.map((pid) => taskset(['-p', '-c', all, String(pid)])));
  return 'scheduler';
}
