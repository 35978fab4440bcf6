// Measures the console in headless Chromium against a running server:
//  - first contentful paint of the sign-in page, cold (a new browser
//    context each time, nothing cached), from the Performance API;
//  - the overview with its data on screen after a load with a session
//    (first meaningful paint: the latest decisions table filled);
//  - with FLEETBAN_BENCH_IP (an address that has a decision) also: the next
//    page, a search by one address (that one, then the newest row's), and a
//    search by the /16 holding it.
// Each figure is the median and the worst of RUNS runs (default 5).
//
//   FLEETBAN_CONSOLE_URL=http://127.0.0.1:8080 FLEETBAN_CONSOLE_ADMIN=user:password \
//     [FLEETBAN_BENCH_IP=1.2.3.4] node web/scripts/measure.mjs

import { credentials, launch, signIn } from "../tests/browser.mjs";

const base = process.env.FLEETBAN_CONSOLE_URL;
if (!base) {
  console.error("set FLEETBAN_CONSOLE_URL and FLEETBAN_CONSOLE_ADMIN");
  process.exit(2);
}
const RUNS = Number(process.env.RUNS ?? 5);
const admin = credentials("FLEETBAN_CONSOLE_ADMIN");

function report(name, values) {
  const s = [...values].sort((a, b) => a - b);
  const median = s[Math.floor(s.length / 2)];
  console.log(`${name.padEnd(44)} median ${median.toFixed(0).padStart(5)} ms   worst ${s[s.length - 1].toFixed(0).padStart(5)} ms   (${RUNS} runs)`);
}

/** Milliseconds from navigation start until `selector` is on screen. */
async function loadTime(page, url, selector) {
  await page.goto(url, { waitUntil: "commit" });
  await page.waitForSelector(selector, { state: "visible", timeout: 60_000 });
  return page.evaluate(() => performance.now());
}

/** Milliseconds from a click until `done()` holds, timed inside the page. */
async function actionTime(page, act, done) {
  const t0 = await page.evaluate(() => performance.now());
  await act();
  await done();
  return (await page.evaluate(() => performance.now())) - t0;
}

const browser = await launch();
try {
  const fcp = [];
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(base + "/", { waitUntil: "load" });
    await page.getByLabel("User name").waitFor();
    fcp.push(
      await page.evaluate(
        () =>
          new Promise((resolve) => {
            const e = performance.getEntriesByName("first-contentful-paint")[0];
            if (e) return resolve(e.startTime);
            new PerformanceObserver((l) => resolve(l.getEntries()[0].startTime)).observe({ type: "paint", buffered: true });
          }),
      ),
    );
    await ctx.close();
  }
  report("sign-in page, first contentful paint", fcp);

  const ctx = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  const page = await ctx.newPage();
  await signIn(page, base, admin);
  const overview = [];
  const decisions = [];
  for (let i = 0; i < RUNS; i++) {
    overview.push(await loadTime(page, base + "/", '[data-testid="latest-decisions"] tbody tr'));
    decisions.push(await loadTime(page, base + "/decisions", '[data-testid="decisions"] tbody tr'));
  }
  report("overview with data (first meaningful paint)", overview);
  report("decisions page, first 50 rows", decisions);

  const ip = process.env.FLEETBAN_BENCH_IP;
  // Paging and searching need a full table: only with FLEETBAN_BENCH_IP.
  if (ip) await searching(page, ip);
  await ctx.close();
} finally {
  await browser.close();
}

async function searching(page, ip) {
  const searches = [];
  const prefixes = [];
  const pages = [];
  const rows = page.locator('[data-testid="decisions"] tbody tr');
  for (let i = 0; i < RUNS; i++) {
    await loadTime(page, base + "/decisions", '[data-testid="decisions"] tbody tr');
    const first = await rows.first().getAttribute("data-target");
    pages.push(
      await actionTime(
        page,
        () => page.getByRole("button", { name: "Next →" }).click(),
        () => page.getByText("Page 2").waitFor(),
      ),
    );
    const target = i === 0 ? ip : first.split("/")[0];
    searches.push(
      await actionTime(
        page,
        async () => {
          await page.getByLabel("IP or CIDR").fill(target);
          await page.getByRole("button", { name: "Search" }).click();
        },
        () => page.locator(`tr[data-target="${target}"]`).first().waitFor(),
      ),
    );
    const [a, b] = target.split(".");
    prefixes.push(
      await actionTime(
        page,
        async () => {
          await page.getByLabel("IP or CIDR").fill(`${a}.${b}.0.0/16`);
          await page.getByRole("button", { name: "Search" }).click();
        },
        () => page.waitForFunction((p) => [...document.querySelectorAll('[data-testid="decisions"] tbody tr')].length > 0 && [...document.querySelectorAll('[data-testid="decisions"] tbody tr')].every((r) => r.dataset.target.startsWith(p)), `${a}.${b}.`),
      ),
    );
  }
  report("decisions, next page", pages);
  report("decisions, search one address", searches);
  report("decisions, search a /16", prefixes);
}
