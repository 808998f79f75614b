/**
 * The chart: intercepts per message, per design, per workload shape, on a log scale, as a
 * vega-lite spec compiled to vega and rendered to SVG headlessly (no canvas, no browser).
 * A log scale cannot show 0: values under the floor (a bitmask receiver that never slept can
 * cost exactly 0) are drawn at the floor and labelled with their real value. The VM part's
 * counts (vm/chart-vm.ts) go under it.
 */
import type { TopLevelSpec } from 'vega-lite';
import { formatPerMsg, shapeLabel } from './report.js';
import type { BenchReport, CellResult } from './types.js';
import { DESIGNS } from './types.js';
import { vmChartSpec } from './vm/chart-vm.js';

export const CHART_FLOOR = 1e-5;

const COLORS: Record<(typeof DESIGNS)[number], string> = {
  legacy2010: '#e45756',
  'legacy2010-mask': '#ff9d98',
  qemu: '#4c78a8',
  bitmask: '#54a24b',
  'bitmask-w1c': '#88d27a',
};

const SEED = [
  { y: 2, label: 'seed: 2' },
  { y: 4, label: 'seed: 4 (mask)' },
];

interface Datum {
  shape: string;
  design: string;
  intercepts: number;
  plotted: number;
  label: string;
}

export function chartData(results: readonly CellResult[]): Datum[] {
  return results
    .filter((r) => r.error === undefined && r.interceptsPerMsg !== null)
    .map((r) => ({
      shape: shapeLabel(r),
      design: r.design,
      intercepts: r.interceptsPerMsg!,
      plotted: Math.max(CHART_FLOOR, r.interceptsPerMsg!),
      label: formatPerMsg(r.interceptsPerMsg),
    }));
}

export function chartSpec(report: Pick<BenchReport, 'results' | 'machine' | 'options'>): TopLevelSpec {
  const data = chartData(report.results);
  const shapes = [...new Set(data.map((d) => d.shape))];
  const designs = DESIGNS.filter((d) => data.some((x) => x.design === d));
  const m = report.machine;
  const max = Math.max(10, ...data.map((d) => d.plotted * 2));
  const yScale = { type: 'log' as const, domain: [CHART_FLOOR, max], clamp: true };
  const ticks: number[] = [];
  for (let t = CHART_FLOOR; t <= max * 1.0001; t *= 10) ticks.push(Number(t.toPrecision(1)));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'Intercepts per message (traps + injections), by doorbell design',
      subtitle: [
        `${m.cpuModel}, ${m.cores} cores, Linux ${m.kernel}, Node ${m.node} — ivshmem bench${report.options.quick ? ' --quick' : ''}`,
        `Log scale; a value below ${CHART_FLOOR} (or 0) is drawn at ${CHART_FLOOR}, labelled with its real value.`,
        "Dashed: the seed's 2 and 4 per message (the 2010 design's receiver side, without and with mask/unmask).",
      ],
      anchor: 'start',
      fontSize: 15,
      subtitleFontSize: 11,
    },
    width: { step: 17 },
    height: 340,
    background: 'white',
    padding: 12,
    layer: [
      {
        data: { values: data },
        mark: { type: 'bar', tooltip: true },
        encoding: {
          x: { field: 'shape', type: 'nominal', sort: shapes, title: 'workload', axis: { labelAngle: 0, labelFontSize: 11 } },
          xOffset: { field: 'design', type: 'nominal', sort: designs },
          y: { field: 'plotted', type: 'quantitative', scale: yScale, title: 'intercepts per message (log)', axis: { values: ticks, format: '~g' } },
          color: {
            field: 'design',
            type: 'nominal',
            sort: designs,
            scale: { domain: designs, range: designs.map((d) => COLORS[d]) },
            legend: { title: 'design', orient: 'top', direction: 'horizontal' },
          },
        },
      },
      {
        data: { values: data },
        mark: { type: 'text', angle: 270, align: 'left', baseline: 'middle', dx: 3, fontSize: 8, color: '#333' },
        encoding: {
          x: { field: 'shape', type: 'nominal', sort: shapes },
          xOffset: { field: 'design', type: 'nominal', sort: designs },
          y: { field: 'plotted', type: 'quantitative', scale: yScale },
          text: { field: 'label' },
        },
      },
      {
        data: { values: SEED },
        mark: { type: 'rule', strokeDash: [4, 4], color: '#888' },
        encoding: { y: { field: 'y', type: 'quantitative', scale: yScale } },
      },
      {
        data: { values: SEED },
        mark: { type: 'text', align: 'left', baseline: 'middle', dx: 4, fontSize: 9, color: '#666', x: 'width' },
        encoding: { y: { field: 'y', type: 'quantitative', scale: yScale }, text: { field: 'label' } },
      },
    ],
    config: CONFIG,
  };
}

const CONFIG = { view: { stroke: null }, axis: { grid: true, gridOpacity: 0.4 } };

/** The host matrix's chart, the VM part's under it, or either alone. */
export function fullSpec(report: Pick<BenchReport, 'results' | 'machine' | 'options' | 'vm'>): TopLevelSpec {
  const host = chartData(report.results).length > 0 ? chartSpec(report) : null;
  const vm = report.vm?.available === true && report.vm.cells.some((c) => c.error === undefined) ? vmChartSpec(report.vm, CHART_FLOOR) : null;
  if (host === null && vm === null) throw new RangeError('no cell produced figures: nothing to chart');
  if (vm === null) return host!;
  const schema = 'https://vega.github.io/schema/vega-lite/v6.json';
  if (host === null) return { $schema: schema, background: 'white', padding: 12, ...vm, config: CONFIG } as TopLevelSpec;
  const { $schema: _s, background: _b, padding: _p, config: _c, ...main } = host as TopLevelSpec & { background?: unknown; padding?: unknown };
  return { $schema: schema, background: 'white', padding: 12, vconcat: [main, vm], spacing: 40, config: CONFIG } as TopLevelSpec;
}

/** Renders the chart to an SVG string (vega's headless renderer; vega-lite compiles the spec). */
export async function renderChartSvg(report: Pick<BenchReport, 'results' | 'machine' | 'options' | 'vm'>): Promise<string> {
  // Loaded on demand: the charting libraries cost ~0.3 s to load, and only the SVG needs them.
  const [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
  const compiled = vegaLite.compile(fullSpec(report)).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
