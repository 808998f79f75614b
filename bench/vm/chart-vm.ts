/**
 * The VM part's chart: per cell, what crossed each way per message, measured (QEMU's trace, the
 * guest kernel) beside modelled (the device models), on the main chart's log scale and floor.
 */
import type { TopLevelSpec } from 'vega-lite';
import { formatPerMsg } from '../report.js';
import type { VmReport } from '../types.js';
import { vmCellName } from './report-vm.js';

export const VM_SERIES = [
  { name: 'guest→host Doorbell writes, QEMU-traced', color: '#4c78a8' },
  { name: 'guest→host Doorbell writes, model', color: '#9ecae9' },
  { name: 'host→guest interrupts, guest kernel', color: '#54a24b' },
  { name: 'host→guest interrupts, model', color: '#88d27a' },
] as const;

interface VmDatum {
  cell: string;
  series: string;
  plotted: number;
  label: string;
}

/** `floor`: the main chart's (values below it are drawn there, labelled with their real value). */
export function vmChartData(vm: VmReport, floor: number): VmDatum[] {
  const out: VmDatum[] = [];
  const push = (cell: string, series: string, perMsg: number | null): void => {
    if (perMsg === null) return;
    out.push({ cell, series, plotted: Math.max(floor, perMsg), label: formatPerMsg(perMsg) });
  };
  for (const c of vm.cells) {
    if (c.error !== undefined) continue;
    const name = vmCellName(c);
    push(name, VM_SERIES[0].name, c.guestToHost?.measuredPerMsg ?? null);
    push(name, VM_SERIES[1].name, c.guestToHost?.modelledPerMsg ?? null);
    push(name, VM_SERIES[2].name, c.hostToGuest?.measuredPerMsg ?? null);
    push(name, VM_SERIES[3].name, c.hostToGuest?.modelledPerMsg ?? null);
  }
  return out;
}

/** A view (no $schema): the caller puts it alone or under the main chart. */
export function vmChartSpec(vm: VmReport, floor: number): Exclude<TopLevelSpec, { vconcat: unknown }> & { title: unknown } {
  const data = vmChartData(vm, floor);
  const cells = [...new Set(data.map((d) => d.cell))];
  const series = VM_SERIES.filter((s) => data.some((d) => d.series === s.name));
  const max = Math.max(10, ...data.map((d) => d.plotted * 2));
  const yScale = { type: 'log' as const, domain: [floor, max], clamp: true };
  const encodingX = { field: 'cell', type: 'nominal' as const, sort: cells };
  const offset = { field: 'series', type: 'nominal' as const, sort: series.map((s) => s.name) };
  return {
    title: {
      text: 'In a real VM: per message, counted by QEMU and the guest kernel beside the models',
      subtitle: [
        `${vm.accel === 'tcg' ? 'QEMU TCG (emulated; counts are exact)' : 'QEMU KVM'}, guest kernel ${vm.guestKernel ?? '?'}, ${vm.device}`,
        `Log scale; a value below ${floor} (or 0) is drawn at ${floor}, labelled with its real value.`,
      ],
      anchor: 'start',
      fontSize: 15,
      subtitleFontSize: 11,
    },
    width: { step: 14 },
    height: 300,
    layer: [
      {
        data: { values: data },
        mark: { type: 'bar', tooltip: true },
        encoding: {
          x: { ...encodingX, title: 'VM cell', axis: { labelAngle: -30, labelFontSize: 10 } },
          xOffset: offset,
          y: { field: 'plotted', type: 'quantitative', scale: yScale, title: 'per message (log)', axis: { format: '~g' } },
          color: {
            field: 'series',
            type: 'nominal',
            scale: { domain: series.map((s) => s.name), range: series.map((s) => s.color) },
            legend: { title: null, orient: 'top', direction: 'horizontal', columns: 2 },
          },
        },
      },
      {
        data: { values: data },
        mark: { type: 'text', angle: 270, align: 'left', baseline: 'middle', dx: 3, fontSize: 8, color: '#333' },
        encoding: { x: encodingX, xOffset: offset, y: { field: 'plotted', type: 'quantitative', scale: yScale }, text: { field: 'label' } },
      },
    ],
  };
}
