/** What machine the figures come from: CPU, cores, kernel, Node, memory, load. */
import { readFileSync } from 'node:fs';
import { arch, availableParallelism, cpus, loadavg, platform, release, totalmem, version } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from './paths.js';
import type { MachineInfo } from './types.js';

function cpuModel(): string {
  const fromOs = cpus()[0]?.model?.trim();
  if (fromOs) return fromOs;
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    return line?.split(':')[1]?.trim() ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

export function machineInfo(cc: string | null = null): MachineInfo {
  return {
    cpuModel: cpuModel(),
    cores: cpus().length,
    availableParallelism: availableParallelism(),
    kernel: release(),
    kernelVersion: version(),
    platform: platform(),
    arch: arch(),
    node: process.version,
    v8: process.versions.v8,
    totalMemoryMiB: Math.round(totalmem() / 2 ** 20),
    loadAverage: loadavg().map((x) => Number(x.toFixed(2))),
    date: new Date().toISOString(),
    ivshmemVersion: packageVersion(),
    cc,
  };
}

export function describeMachine(m: MachineInfo): string {
  return `${m.cpuModel}, ${m.cores} core${m.cores === 1 ? '' : 's'}, Linux ${m.kernel}, Node ${m.node}, load ${m.loadAverage.join(' ')}`;
}
