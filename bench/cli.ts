/**
 * What `ivshmem bench` does once its flags are parsed: run, print the tables to stdout, write
 * the JSON and the SVG chart, and say where they went (stderr).
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { renderChartSvg } from './chart.js';
import { Progress } from './progress.js';
import { renderReport } from './report.js';
import { runBench } from './run.js';
import { renderVm } from './vm/report-vm.js';
import type { BenchOptions, BenchReport } from './types.js';

export const DEFAULT_JSON = 'bench-results.json';
export const DEFAULT_SVG = 'bench-results.svg';

export interface CliRunOptions extends BenchOptions {
  /** Where to write the JSON (false: nowhere). */
  json: string | false;
  /** Where to write the SVG chart (false: nowhere). */
  svg: string | false;
  /** No progress on stderr. */
  quiet?: boolean;
  stdout?: { write(text: string): unknown };
  stderr?: { write(text: string): unknown; isTTY?: boolean; columns?: number };
  signal?: AbortSignal;
}

export interface CliRunOutcome {
  report: BenchReport;
  failedCells: number;
  files: string[];
}

export async function runBenchCli(options: CliRunOptions): Promise<CliRunOutcome> {
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const progress = new Progress(stderr, { quiet: options.quiet === true });
  const report = await runBench(options, { progress, ...(options.signal ? { signal: options.signal } : {}) });
  stdout.write(`\n${renderReport(report)}`);
  if (report.vm !== undefined) stdout.write(`\n${renderVm(report.vm)}`);
  const files: string[] = [];
  if (options.json !== false) {
    const path = resolve(options.json);
    writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`);
    files.push(path);
  }
  if (options.svg !== false) {
    const path = resolve(options.svg);
    if (report.results.some((r) => r.interceptsPerMsg !== null) || report.vm?.cells.some((c) => c.error === undefined) === true) {
      writeFileSync(path, await renderChartSvg(report));
      files.push(path);
    } else if (options.quiet !== true) {
      stderr.write('no cell produced figures: no chart written\n');
    }
  }
  if (options.quiet !== true) for (const f of files) stderr.write(`wrote ${f}\n`);
  const failedCells = report.results.filter((r) => r.error !== undefined).length + (report.vm?.cells.filter((c) => c.error !== undefined).length ?? 0);
  return { report, failedCells, files };
}
