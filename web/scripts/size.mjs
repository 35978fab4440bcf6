// After `vite build`: writes a gzip copy beside every text file of dist/
// (the server sends it to browsers that accept gzip) and prints the
// bundle's sizes, failing above the budget of 300 KB of gzipped JavaScript.
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { gzipSync, constants } from "node:zlib";

const dist = new URL("../dist/", import.meta.url).pathname;
const BUDGET_JS = 300 * 1024;

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

let js = 0;
let total = 0;
const rows = [];
for (const path of walk(dist).sort()) {
  if (path.endsWith(".gz")) continue;
  const raw = readFileSync(path);
  const gz = gzipSync(raw, { level: constants.Z_BEST_COMPRESSION });
  if (/\.(js|css|html|svg|json)$/.test(path)) writeFileSync(`${path}.gz`, gz);
  if (path.endsWith(".js")) js += gz.length;
  total += gz.length;
  rows.push(`  ${relative(dist, path).padEnd(40)} ${String(raw.length).padStart(8)} B  ${String(gz.length).padStart(8)} B gzipped`);
}
console.log(rows.join("\n"));
console.log(`console bundle: ${(js / 1024).toFixed(1)} KiB of gzipped JavaScript (budget ${BUDGET_JS / 1024} KiB), ${(total / 1024).toFixed(1)} KiB gzipped in all`);
if (js > BUDGET_JS) {
  console.error("the console's JavaScript is over budget");
  process.exit(1);
}
