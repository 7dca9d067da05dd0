// How a program run inside the outer guest (bench.ts, node-start.ts) hands its
// Markdown report to the host (bench-host.mjs cuts it out of stdout by these lines).

export const REPORT_BEGIN = '----- multivm-bench report begin -----';
export const REPORT_END = '----- multivm-bench report end -----';

export function writeReport(markdown: string): void {
  process.stdout.write(`${REPORT_BEGIN}\n${markdown}\n${REPORT_END}\n`);
}

export function progress(what: string, msg: string): void {
  process.stderr.write(`[${what} ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}
