/** The VM part's tables: what crossed each way, counted by QEMU and the guest kernel beside the models; throughput; round trips. */
import { formatCount, formatPerMsg, formatRatio, formatSig, table } from '../report.js';
import type { VmCellResult, VmDirection, VmReport } from '../types.js';

export function vmCellName(c: Pick<VmCellResult, 'workload' | 'design' | 'busyPoll' | 'producers'>): string {
  const n = c.workload === 'fan-in' ? ` ×${c.producers}` : '';
  return `${c.workload}${n} · ${c.design}${c.busyPoll === 'none' ? '' : ` (${c.busyPoll} busy-polls)`}`;
}

function directionTable(cells: readonly VmCellResult[], pick: (c: VmCellResult) => VmDirection | null, measuredName: string, senderName: string): string {
  const rows: string[][] = [['cell', 'messages', measuredName, 'per msg', 'model', 'per msg', 'model/measured', senderName, 'suppressed']];
  for (const c of cells) {
    const d = pick(c);
    if (d === null) {
      if (c.error !== undefined) rows.push([vmCellName(c), 'FAILED', c.error.split('\n')[0]!.slice(0, 60)]);
      continue;
    }
    if (d.messages === 0 && d.measured === 0 && d.modelled === 0) continue;
    rows.push([
      vmCellName(c),
      formatCount(d.messages),
      formatCount(d.measured),
      formatPerMsg(d.measuredPerMsg),
      formatCount(d.modelled),
      formatPerMsg(d.modelledPerMsg),
      formatRatio(d.ratio),
      formatCount(d.senderSignals),
      formatCount(d.suppressed),
    ]);
  }
  return table(rows);
}

export function renderVm(vm: VmReport): string {
  if (!vm.available) return `in a real VM: not run (${vm.reason ?? 'unavailable'})\n`;
  const parts: string[] = [];
  const accel = vm.accel === 'tcg' ? 'TCG (emulated: timings are not hardware timings; counts are exact)' : 'KVM';
  parts.push(
    `in a real VM — ${accel}; guest kernel ${vm.guestKernel ?? '?'}, booted in ${formatSig((vm.bootMs ?? Number.NaN) / 1000)} s; device ${vm.device}; ` +
      `busy-poll ${vm.busyPollMicros} µs`,
  );
  parts.push(
    `guest→host: Doorbell writes counted by QEMU (trace of MMIO writes to BAR0 + 0xc), the guest's device model beside it\n` +
      directionTable(vm.cells, (c) => c.guestToHost, 'QEMU-traced', 'guest stores'),
  );
  parts.push(
    `host→guest: MSI-X interrupts counted by the guest kernel (/proc/interrupts), the guest's device model beside it\n` +
      directionTable(vm.cells, (c) => c.hostToGuest, 'guest kernel', 'host eventfd writes'),
  );
  const rows: string[][] = [['cell', 'messages', 'msg/s', 'RTT p50 µs', 'RTT p99 µs']];
  for (const c of vm.cells) rows.push([vmCellName(c), formatCount(c.messages), formatCount(c.msgsPerSec), formatSig(c.rttP50Us), formatSig(c.rttP99Us)]);
  parts.push(`throughput and ping-pong round trips (host → guest → host, through the lanes)\n${table(rows)}`);
  const lat: string[][] = [['round trip on vector 0', 'rounds', 'p50 µs', 'p99 µs']];
  for (const l of vm.latency) lat.push(l.available ? [l.name, formatCount(l.rounds), formatSig(l.rttP50Us), formatSig(l.rttP99Us)] : [l.name, `unavailable: ${l.reason ?? ''}`]);
  parts.push(`bare round trips, host Peer → guest → host, same guest\n${table(lat)}\n  node-pong / c-pong p50: ${formatRatio(vm.nodeVsC)}`);
  const failed = vm.cells.filter((c) => c.error !== undefined).length;
  if (failed > 0) parts.push(`${failed} VM cell${failed === 1 ? '' : 's'} FAILED (see above)`);
  return `${parts.join('\n\n')}\n`;
}
