/**
 * `npm run fuzz`: the long seeded mutation run (default 100,000 cases, at most 20 minutes) over every input format.
 * Prints a table per format and every finding (a non-typed error, or a case slower than 5 s); exits 1 on any.
 *   npm run fuzz -- --cases 100000 --seconds 1200 --seed 1
 */
import { parseArgs } from "node:util";
import { fuzz } from "../test/helpers/fuzz.js";

const { values } = parseArgs({ options: { cases: { type: "string" }, seconds: { type: "string" }, seed: { type: "string" }, "slow-ms": { type: "string" } } });
const cases = Number(values.cases ?? 100_000);
const seconds = Number(values.seconds ?? 1200);
const seed = Number(values.seed ?? 1);
// 5 s as in npm test: the worst hostile constructions take ~0.35 s alone; the margin absorbs a loaded CI machine.
const slowMs = Number(values["slow-ms"] ?? 5000);
const report = await fuzz({ cases, seconds, seed, slowMs });
console.log(`fuzz: ${report.cases} cases in ${report.seconds.toFixed(1)} s (seed ${seed}), peak RSS ${report.peakRssMb.toFixed(0)} MB`);
console.log("format          cases   value  typed error  slowest");
for (const [name, s] of Object.entries(report.byTarget)) {
  console.log(`${name.padEnd(14)} ${String(s.cases).padStart(6)} ${String(s.ok).padStart(7)} ${String(s.typed).padStart(12)} ${s.maxMs.toFixed(0).padStart(6)} ms`);
}
for (const f of report.findings.slice(0, 50)) console.log(`FINDING ${f.kind} ${f.target} #${f.case}: ${f.detail}`);
console.log(`${report.findings.length} findings`);
process.exitCode = report.findings.length > 0 ? 1 : 0;
