/**
 * Progress while the bench runs, on stderr (stdout carries only the tables): on a terminal one
 * live line, rewritten in place with the step and its elapsed time; elsewhere (a pipe, a CI
 * log) one plain line per finished step.
 */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export class Progress {
  readonly #out: ProgressStream;
  readonly #live: boolean;
  readonly #quiet: boolean;
  #total = 0;
  #index = 0;
  #label = '';
  #stepStart = 0;
  #runStart = Date.now();
  #timer: NodeJS.Timeout | null = null;
  #frame = 0;

  constructor(out: ProgressStream = process.stderr, options: { live?: boolean; quiet?: boolean } = {}) {
    this.#out = out;
    this.#live = options.live ?? out.isTTY === true;
    this.#quiet = options.quiet ?? false;
  }

  start(total: number): void {
    this.#total = total;
    this.#index = 0;
    this.#runStart = Date.now();
  }

  /** Adds steps discovered later (e.g. a cell retried). */
  grow(by: number): void {
    this.#total += by;
  }

  step(label: string): void {
    this.#index++;
    this.#label = label;
    this.#stepStart = Date.now();
    if (!this.#live || this.#quiet) return;
    this.#render();
    if (this.#timer === null) {
      this.#timer = setInterval(() => this.#render(), 100);
      this.#timer.unref();
    }
  }

  /** The current step is done; `summary` is shown on the plain line. */
  done(summary = ''): void {
    if (this.#quiet) return;
    const seconds = ((Date.now() - this.#stepStart) / 1000).toFixed(2);
    if (this.#live) {
      this.#render();
      return;
    }
    this.#out.write(`${this.#counter()} ${this.#label}${summary === '' ? '' : `: ${summary}`} (${seconds} s)\n`);
  }

  /** A line that stays (warnings, unavailable baselines). */
  note(text: string): void {
    if (this.#quiet) return;
    if (this.#live) this.#out.write('\r\x1b[2K');
    this.#out.write(`${text}\n`);
    if (this.#live && this.#timer !== null) this.#render();
  }

  finish(): void {
    if (this.#timer !== null) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
    if (this.#quiet) return;
    const seconds = ((Date.now() - this.#runStart) / 1000).toFixed(1);
    if (this.#live) this.#out.write('\r\x1b[2K');
    this.#out.write(`bench: ${this.#index} steps in ${seconds} s\n`);
  }

  #counter(): string {
    const width = String(this.#total).length;
    return `[${String(this.#index).padStart(width)}/${this.#total}]`;
  }

  #render(): void {
    this.#frame = (this.#frame + 1) % SPINNER.length;
    const elapsed = ((Date.now() - this.#stepStart) / 1000).toFixed(1);
    const total = ((Date.now() - this.#runStart) / 1000).toFixed(0);
    const bar = this.#bar(20);
    let line = `${SPINNER[this.#frame]} ${this.#counter()} ${bar} ${this.#label}  ${elapsed} s  (${total} s total)`;
    const columns = this.#out.columns ?? 100;
    if (line.length > columns - 1) line = line.slice(0, columns - 1);
    this.#out.write(`\r\x1b[2K${line}`);
  }

  #bar(width: number): string {
    const filled = this.#total === 0 ? 0 : Math.round((width * (this.#index - 1)) / this.#total);
    return `${'█'.repeat(filled)}${'░'.repeat(Math.max(0, width - filled))}`;
  }
}
