// Pull progress on stderr: on a terminal one line per layer, redrawn in
// place; otherwise a line per layer when it finishes and a throttled summary.

import type { PullEvent } from '../image/pull.ts';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${UNITS[u]}`;
}

interface LayerLine {
  digest: string;
  state: string;
  bytes: number;
  total: number;
  rate: number;
}

export class ProgressDisplay {
  private readonly out: NodeJS.WriteStream;
  private readonly tty: boolean;
  private lines: LayerLine[] = [];
  private drawn = 0;
  private lastSummary = 0;

  constructor(out: NodeJS.WriteStream = process.stderr) {
    this.out = out;
    this.tty = out.isTTY === true;
  }

  readonly onEvent = (e: PullEvent): void => {
    if (e.type === 'resolved') {
      const total = e.layers.reduce((s, l) => s + l.size, 0);
      this.out.write(`pulling ${e.reference}${e.source !== e.reference ? ` from ${e.source}` : ''}: ${e.layers.length} layers, ${formatBytes(total)}\n  manifest ${e.manifestDigest}\n`);
      this.lines = e.layers.map((l) => ({ digest: l.digest, state: 'waiting', bytes: 0, total: l.size, rate: 0 }));
      this.drawn = 0;
      return;
    }
    const line = this.lines[e.index];
    if (!line) return;
    Object.assign(line, { state: e.state, bytes: e.bytes, total: e.total, rate: e.bytesPerSec });
    if (this.tty) this.redraw();
    else if (e.state === 'done' || e.state === 'stored' || e.state === 'retrying') this.out.write(this.render(line) + '\n');
    else if (Date.now() - this.lastSummary > 2000) {
      this.lastSummary = Date.now();
      const bytes = this.lines.reduce((s, l) => s + l.bytes, 0);
      const total = this.lines.reduce((s, l) => s + l.total, 0);
      this.out.write(`  ${formatBytes(bytes)} of ${formatBytes(total)}\n`);
    }
  };

  private render(l: LayerLine): string {
    const pct = l.total > 0 ? Math.floor((100 * l.bytes) / l.total) : 100;
    const detail = l.state === 'stored' ? 'already stored' : `${formatBytes(l.bytes)}/${formatBytes(l.total)} ${pct}%${l.rate > 0 ? ` ${formatBytes(l.rate)}/s` : ''}`;
    return `  ${l.digest.slice(7, 19)} ${l.state.padEnd(11)} ${detail}`;
  }

  private redraw(): void {
    let s = this.drawn > 0 ? `\x1b[${this.drawn}A` : '';
    for (const l of this.lines) s += `\x1b[2K${this.render(l)}\n`;
    this.drawn = this.lines.length;
    this.out.write(s);
  }
}
