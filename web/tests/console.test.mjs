// Browser tests of the console in headless Chromium, against a real
// fleetban-server on Postgres with real agents. tests/tests/console.rs
// starts them and runs `npm test` with:
//   FLEETBAN_CONSOLE_URL         the server's HTTP address
//   FLEETBAN_CONSOLE_ADMIN       admin user:password
//   FLEETBAN_CONSOLE_VIEWER      viewer user:password
//   FLEETBAN_CONSOLE_ATTACK_LOG  the log the first agent follows
//   FLEETBAN_CONSOLE_ATTACKER    an address to brute-force from
//   FLEETBAN_CONSOLE_FIREWALL    JSON argv printing the second agent's firewall
//   FLEETBAN_CONSOLE_ENROLL      JSON {argv, config}: how to run fleetban-agent
//                                for a new agent, and that agent's config
//   FLEETBAN_CONSOLE_FEED_FILE   a writable block-list file to add as a feed
//   FLEETBAN_CONSOLE_REVOKE      the agent to revoke from the agents page
//                                (the last test; tests/tests/console.rs then
//                                checks its stream was closed)
// Without FLEETBAN_CONSOLE_URL the tests skip (say so, and run them through
// `cargo test -p fleetban-tests --test console`).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { credentials, launch, screenshots, signIn } from "./browser.mjs";

const base = process.env.FLEETBAN_CONSOLE_URL;
const skip = base ? false : "FLEETBAN_CONSOLE_URL is not set: run through `cargo test -p fleetban-tests --test console`";

/** Polls `check` every 100 ms for up to `ms`; the last failure is thrown. */
async function eventually(check, ms = 20_000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** GET from the API with the page's session. */
function apiGet(page, path) {
  return page.evaluate(async (path) => {
    const s = JSON.parse(sessionStorage.getItem("fleetban.session"));
    const res = await fetch(path, { headers: { Authorization: `Bearer ${s.access_token}` } });
    return { status: res.status, body: await res.json() };
  }, path);
}

/** Targets of the active bans a feed made, sorted. */
async function feedBans(page, feed) {
  const r = await apiGet(page, "/api/v1/decisions?origin=feed&status=active&limit=1000");
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.items
    .filter((d) => d.creator === `feed:${feed}`)
    .map((d) => d.target)
    .sort();
}

function firewall() {
  const argv = JSON.parse(process.env.FLEETBAN_CONSOLE_FIREWALL);
  return execFileSync(argv[0], argv.slice(1), { encoding: "utf8" });
}

function failedLogin(ip, n) {
  const s = String(n % 60).padStart(2, "0");
  return `Nov 25 10:00:${s} host sshd[${1000 + n}]: Failed password for root from ${ip} port ${40000 + n} ssh2\n`;
}

describe("fleetban console", { skip }, () => {
  let browser;
  const shot = screenshots();
  before(async () => {
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
  });

  test("a bad sign-in is refused with a clear message", async () => {
    const page = await browser.newPage();
    const { user } = credentials("FLEETBAN_CONSOLE_ADMIN");
    await page.goto(base + "/");
    await shot(page, "01-sign-in");
    await page.getByLabel("User name").fill(user);
    await page.getByLabel("Password").fill("not the password at all");
    await page.getByRole("button", { name: "Sign in" }).click();
    const alert = page.getByRole("alert");
    await alert.waitFor();
    assert.equal((await alert.textContent()).trim(), "Wrong user name or password.");
    // Still signed out: the form is there and nothing was stored.
    assert.equal(await page.getByRole("button", { name: "Sign in" }).count(), 1);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("fleetban.session")), null);
    await shot(page, "02-sign-in-refused");
    await page.close();
  });

  test("a brute force appears live on the overview and in the table, and a revoke from the table lifts it on the agents", async () => {
    const admin = credentials("FLEETBAN_CONSOLE_ADMIN");
    const attacker = process.env.FLEETBAN_CONSOLE_ATTACKER;
    const ctx = await browser.newContext({ viewport: { width: 1366, height: 900 } });
    const overview = await ctx.newPage();
    const table = await ctx.newPage();

    // Signing in with the keyboard alone: the form has focus, Tab, Enter.
    await overview.goto(base + "/");
    // The form takes focus once the app has started; keys typed before
    // that would be lost.
    await overview.waitForFunction(() => document.activeElement?.tagName === "INPUT");
    await overview.keyboard.type(admin.user);
    await overview.keyboard.press("Tab");
    await overview.keyboard.type(admin.password);
    await overview.keyboard.press("Enter");
    await overview.getByRole("heading", { name: "Overview" }).waitFor();

    await signIn(table, base, admin);
    await table.getByRole("link", { name: "Decisions" }).click();
    await table.getByRole("heading", { name: "Decisions" }).waitFor();
    for (const p of [overview, table]) {
      await p.locator(".live.on").waitFor();
      // A page load would drop this marker.
      await p.evaluate(() => (window.__noReload = true));
    }
    assert.equal(await table.locator(`tr[data-target="${attacker}"]`).count(), 0);
    assert.ok(!firewall().includes(attacker), "the agent blocks the address before any failure");

    // Three failed logins in the first agent's log: maxretry is 3.
    appendFileSync(process.env.FLEETBAN_CONSOLE_ATTACK_LOG, [1, 2, 3].map((n) => failedLogin(attacker, n)).join(""));

    await overview.getByTestId("latest-decisions").getByText(attacker).waitFor({ timeout: 30_000 });
    const row = table.locator(`tr[data-target="${attacker}"]`);
    await row.waitFor({ timeout: 30_000 });
    assert.match(await row.textContent(), /active/);
    assert.match(await row.textContent(), /local/);
    for (const p of [overview, table]) assert.equal(await p.evaluate(() => window.__noReload), true, "the page was reloaded");
    // The failures reach the overview's top lists live as well.
    await overview.getByRole("region", { name: "Top addresses" }).getByText(attacker).waitFor({ timeout: 30_000 });
    await overview.getByRole("region", { name: "Top prefixes" }).getByText("198.19.0.0/24").waitFor();
    await shot(overview, "03-overview");
    await shot(table, "04-decisions");

    // The second agent enforces the fleet's ban.
    await eventually(() => assert.ok(firewall().includes(attacker), "the second agent does not block the attacker"));

    // Revoke from the table, with a reason.
    await row.getByRole("button", { name: "Revoke" }).click();
    const dialog = table.getByRole("dialog");
    await dialog.getByLabel("Reason").fill("console test");
    await shot(table, "05-revoke-dialog");
    await dialog.getByRole("button", { name: "Revoke" }).click();
    await dialog.waitFor({ state: "detached" });
    await eventually(async () => assert.match(await row.textContent(), /revoked/));
    assert.match(await row.textContent(), /console test/);

    // And the agent no longer holds it.
    await eventually(() => assert.ok(!firewall().includes(attacker), "the second agent still blocks the attacker after the revoke"));

    // The audit log names who revoked.
    await table.getByRole("link", { name: "Audit log" }).click();
    const audit = table.getByTestId("audit");
    await audit.getByText("decision.revoke").first().waitFor();
    assert.match(await audit.textContent(), new RegExp(`user:${admin.user}`));
    await shot(table, "06-audit");

    // IP lookup: the timeline holds the failures, the ban and its revocation.
    await table.goto(`${base}/ips/${attacker}`);
    await table.getByTestId("verdict").waitFor();
    const timeline = table.getByRole("region", { name: "Timeline" });
    await eventually(async () => assert.equal(await timeline.locator("li.failure").count(), 3));
    assert.equal(await timeline.locator("li.ban").count(), 1);
    assert.equal(await timeline.locator("li.revoke").count(), 1);
    await shot(table, "07-ip-lookup");

    await table.getByRole("link", { name: "Agents" }).click();
    await table.getByTestId("agents").getByText("online").first().waitFor();
    await shot(table, "08-agents");

    await table.getByRole("link", { name: "Users" }).click();
    await table.getByTestId("users").getByText("viewer").waitFor();
    await shot(table, "09-users");

    await table.getByRole("link", { name: "API tokens" }).click();
    await table.getByRole("button", { name: "New token…" }).click();
    await table.getByRole("dialog").getByLabel("Name").fill("soar");
    await table.getByRole("dialog").getByRole("button", { name: "Create" }).click();
    assert.match(await table.getByTestId("token-secret").textContent(), /^fbt_/);
    await table.getByTestId("tokens").getByText("soar").waitFor();
    await shot(table, "10-tokens");

    // Dark theme, and a phone's width.
    await overview.getByRole("button", { name: "Theme: auto. Change theme" }).click();
    await overview.getByRole("button", { name: "Theme: light. Change theme" }).click();
    await overview.getByRole("button", { name: "Theme: dark. Change theme" }).waitFor();
    assert.equal(await overview.evaluate(() => document.documentElement.dataset.theme), "dark");
    await shot(overview, "11-overview-dark");
    await overview.setViewportSize({ width: 390, height: 844 });
    await overview.getByRole("button", { name: "Menu" }).click();
    await shot(overview, "12-overview-phone");
    await ctx.close();
  });

  test("a ban made in the dialog reaches the table; bad input is refused with the API's message", async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await signIn(page, base, credentials("FLEETBAN_CONSOLE_ADMIN"));
    await page.goto(base + "/decisions");
    await page.getByRole("button", { name: "Ban…" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel(/Addresses or prefixes/).fill("300.1.2.3");
    await dialog.getByRole("button", { name: "Ban" }).click();
    await dialog.getByRole("alert").waitFor();
    assert.match(await dialog.getByRole("alert").textContent(), /300\.1\.2\.3/);
    await dialog.getByLabel(/Addresses or prefixes/).fill("192.0.2.0/28\n198.51.100.9");
    await dialog.getByLabel("Reason").fill("scanner");
    await dialog.getByLabel("Duration").selectOption("24h");
    await dialog.getByRole("button", { name: "Ban" }).click();
    await dialog.waitFor({ state: "detached" });
    await page.locator('tr[data-target="192.0.2.0/28"]').waitFor();
    await page.locator('tr[data-target="198.51.100.9"]').waitFor();

    // Export: the active bans as CSV and as a block list.
    const [csv] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export CSV" }).click()]);
    const csvText = readFileSync(await csv.path(), "utf8");
    assert.match(csvText, /192\.0\.2\.0\/28/);
    assert.match(csvText, /scanner/);
    const [text] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export block list" }).click()]);
    const lines = readFileSync(await text.path(), "utf8").trim().split("\n");
    assert.ok(lines.includes("192.0.2.0/28") && lines.some((l) => l.startsWith("198.51.100.9")), lines.join(","));

    // Search by CIDR: only what overlaps 192.0.2.0/24.
    await page.getByLabel("IP or CIDR").fill("192.0.2.0/24");
    await page.getByRole("button", { name: "Search" }).click();
    await eventually(async () => assert.equal(await page.locator("tbody tr").count(), 1));
    assert.equal(await page.locator('tr[data-target="192.0.2.0/28"]').count(), 1);
    await page.getByLabel("IP or CIDR").fill("not-an-ip");
    await page.getByRole("button", { name: "Search" }).click();
    await page.getByRole("alert").getByText(/not an IP address or a CIDR prefix/).waitFor();

    // Bulk revoke both from the unfiltered list.
    await page.getByLabel("IP or CIDR").fill("");
    await page.getByLabel("Status").selectOption("active");
    await page.getByLabel("Origin").selectOption("manual");
    await page.getByRole("button", { name: "Search" }).click();
    await eventually(async () => assert.equal(await page.locator("tbody tr").count(), 2));
    await page.getByLabel("Select every active decision on this page").check();
    await page.getByRole("button", { name: "Revoke selected (2)" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Revoke" }).click();
    await eventually(async () => assert.equal(await page.locator("tbody tr").count(), 0));
    await ctx.close();
  });

  test("a viewer sees no write buttons, and the API refuses a viewer's write", async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await signIn(page, base, credentials("FLEETBAN_CONSOLE_VIEWER"));
    assert.match(await page.getByTestId("who").textContent(), /viewer/);
    await page.getByRole("link", { name: "Decisions" }).click();
    await page.locator("tbody tr").first().waitFor();
    assert.equal(await page.getByRole("button", { name: "Ban…" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: /Revoke/ }).count(), 0);
    assert.equal(await page.locator('tbody input[type="checkbox"]').count(), 0);
    assert.equal(await page.getByRole("link", { name: "Users" }).count(), 0);
    assert.equal(await page.getByRole("link", { name: "Audit log" }).count(), 0);
    await shot(page, "13-decisions-viewer");
    await page.goto(base + "/users");
    await page.getByRole("heading", { name: "Not found" }).waitFor();
    // Even a hand-made request is refused by the API.
    const status = await page.evaluate(async () => {
      const s = JSON.parse(sessionStorage.getItem("fleetban.session"));
      const res = await fetch("/api/v1/decisions", {
        method: "POST",
        headers: { Authorization: `Bearer ${s.access_token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ target: "203.0.113.200", reason: "viewer" }),
      });
      return [res.status, (await res.json()).error.code];
    });
    assert.deepEqual(status, [403, "forbidden"]);
    await ctx.close();
  });
  test("policies: a jail rule's maxretry is edited and persists; invalid values are refused with a message", async () => {
    const ctx = await browser.newContext({ viewport: { width: 1366, height: 900 } });
    const page = await ctx.newPage();
    await signIn(page, base, credentials("FLEETBAN_CONSOLE_ADMIN"));
    await page.getByRole("link", { name: "Policies" }).click();
    await page.getByRole("heading", { name: "Policies and jails" }).waitFor();
    await page.getByTestId("rules-summary").waitFor();

    // A new rule for group "web" (no agent of this test is in it).
    await page.getByRole("button", { name: "Add jail rule…" }).click();
    let dialog = page.getByRole("dialog");
    await dialog.getByLabel(/^Group/).fill("web");
    await dialog.getByLabel("Jail").fill("sshd");
    await dialog.getByLabel(/^maxretry/).fill("0");
    await dialog.getByRole("button", { name: "Save" }).click();
    // Refused before it is sent, with the API's own wording.
    assert.equal((await dialog.getByRole("alert").textContent()).trim(), 'maxretry "0": expected 1 to 1000000');
    await dialog.getByLabel(/^maxretry/).fill("4");
    await dialog.getByLabel(/^findtime/).fill("10m");
    // Passes the console's check, refused by the API: its message is shown.
    await dialog.getByLabel(/^bantime/).fill("20y");
    await dialog.getByRole("button", { name: "Save" }).click();
    await dialog.getByRole("alert").getByText(/bantime/).waitFor();
    assert.match(await dialog.getByRole("alert").textContent(), /jail rule: bantime/);
    await shot(page, "15-policies-refused");
    await dialog.getByLabel(/^bantime/).fill("2h");
    await dialog.getByRole("button", { name: "Save" }).click();
    await dialog.waitFor({ state: "detached" });
    const row = page.locator('tr[data-jail="web/sshd"]');
    await eventually(async () => assert.equal((await row.locator(".maxretry").textContent()).trim(), "4"));

    // Change maxretry, reload: the value comes back from the server.
    await page.getByRole("button", { name: "Edit sshd for web" }).click();
    dialog = page.getByRole("dialog");
    assert.equal(await dialog.getByLabel(/^maxretry/).inputValue(), "4");
    await dialog.getByLabel(/^maxretry/).fill("6");
    await dialog.getByRole("button", { name: "Save" }).click();
    await dialog.waitFor({ state: "detached" });
    await page.reload();
    await eventually(async () => assert.equal((await page.locator('tr[data-jail="web/sshd"] .maxretry').textContent()).trim(), "6"));
    assert.match(await page.locator('tr[data-jail="web/sshd"]').textContent(), /10m.*2h/);

    // Correlation rules: bad TOML is refused with the API's message; good rules are saved.
    const rules = page.getByLabel(/^Rules/);
    await rules.fill("[policy]\nwidest_v4 = \"wide\"\n");
    await page.getByRole("button", { name: "Save rules" }).click();
    await page.getByRole("alert").waitFor();
    assert.match(await page.getByRole("alert").textContent(), /widest_v4/);
    await rules.fill('[policy]\n[policy.threshold]\nhosts = 3\nwindow = "10m"\nbantime = "4h"\n');
    await page.getByRole("button", { name: "Save rules" }).click();
    await page.getByRole("status").getByText("Saved.").waitFor();
    await page.reload();
    await page.getByTestId("rules-summary").getByText(/fails on 3 hosts/).waitFor();
    await shot(page, "14-policies");

    // The same page in the dark theme at a phone's width.
    await page.getByRole("button", { name: "Theme: auto. Change theme" }).click();
    await page.getByRole("button", { name: "Theme: light. Change theme" }).click();
    await page.setViewportSize({ width: 390, height: 844 });
    await shot(page, "20-policies-dark-phone");
    await ctx.close();
  });

  test("allowlists: a bad CIDR shows the API's error; an entry is added, kept and removed", async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await signIn(page, base, credentials("FLEETBAN_CONSOLE_ADMIN"));
    await page.getByRole("link", { name: "Allowlists" }).click();
    await page.getByRole("heading", { name: "Allowlists" }).waitFor();
    const form = page.getByRole("form", { name: "Add to an allowlist" });
    await form.getByLabel("Address or CIDR").fill("300.0.0.1/8");
    await form.getByRole("button", { name: "Add" }).click();
    await page.getByRole("alert").waitFor();
    assert.match(await page.getByRole("alert").textContent(), /network "300\.0\.0\.1\/8": expected an IP address or a CIDR prefix/);

    await form.getByLabel("Address or CIDR").fill("10.20.0.0/16");
    await form.getByLabel(/^Group/).fill("web");
    await form.getByLabel(/^Why/).fill("office VPN");
    await form.getByRole("button", { name: "Add" }).click();
    const row = page.locator('tr[data-network="10.20.0.0/16"]');
    await row.waitFor();
    assert.match(await row.textContent(), /group web/);
    assert.equal(await page.getByRole("alert").count(), 0, "the earlier error is gone");
    await page.reload();
    await row.waitFor();
    assert.equal((await row.getByTestId("comment").textContent()).trim(), "office VPN", "the comment survives a reload");

    // The comment is edited; a line break is refused with the API's message.
    await page.getByRole("button", { name: "Edit comment of 10.20.0.0/16" }).click();
    let dialog = page.getByRole("dialog");
    assert.equal(await dialog.getByLabel(/^Why it is allowlisted/).inputValue(), "office VPN");
    // The field stops at 200 characters; past it, the API says why.
    await page.evaluate(() => document.querySelector('input[name="edit-comment"]').removeAttribute("maxlength"));
    await dialog.getByLabel(/^Why it is allowlisted/).fill("y".repeat(201));
    await dialog.getByRole("button", { name: "Save" }).click();
    assert.match(await dialog.getByRole("alert").textContent(), /comment: at most 200 characters/);
    await dialog.getByLabel(/^Why it is allowlisted/).fill("office VPN, Berlin");
    await dialog.getByRole("button", { name: "Save" }).click();
    await dialog.waitFor({ state: "detached" });
    await page.reload();
    await row.waitFor();
    assert.equal((await row.getByTestId("comment").textContent()).trim(), "office VPN, Berlin");
    await shot(page, "16-allowlists");

    await page.getByRole("button", { name: "Remove 10.20.0.0/16" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Remove" }).click();
    await row.waitFor({ state: "detached" });
    await page.reload();
    await page.getByTestId("allowlists").waitFor();
    assert.equal(await row.count(), 0);
    await ctx.close();
  });

  test("feeds: each feed with its last fetch, entries and last error", async () => {
    const ctx = await browser.newContext({ viewport: { width: 1366, height: 700 } });
    const page = await ctx.newPage();
    await signIn(page, base, credentials("FLEETBAN_CONSOLE_ADMIN"));
    await page.getByRole("link", { name: "Feeds" }).click();
    const soc = page.locator('tr[data-feed="soc"]');
    const gone = page.locator('tr[data-feed="gone"]');
    await eventually(async () => {
      await page.reload();
      await soc.waitFor({ timeout: 2000 });
      assert.equal(await soc.locator(".badge").textContent(), "ok");
      assert.equal(await gone.locator(".badge").textContent(), "failing");
    });
    const cells = await soc.locator("td").allTextContents();
    assert.equal(cells[7], "2", `entries: ${cells}`);
    assert.match(await gone.textContent(), /no-such-feed/);
    await shot(page, "17-feeds");
    await ctx.close();
  });

  test("feeds: one added from a file is imported, refreshed, and removed with its bans", async () => {
    const file = process.env.FLEETBAN_CONSOLE_FEED_FILE;
    writeFileSync(file, "198.51.100.90\n198.51.100.91\n");
    const ctx = await browser.newContext({ viewport: { width: 1366, height: 800 } });
    const page = await ctx.newPage();
    await signIn(page, base, credentials("FLEETBAN_CONSOLE_ADMIN"));
    await page.getByRole("link", { name: "Feeds" }).click();
    const form = page.getByRole("form", { name: "Add a feed" });
    // Bad input: the API's message, nothing added.
    await form.getByLabel("Name").fill("ui-list");
    await form.getByLabel("URL or file path").fill("ftp://lists.example/x.txt");
    await form.getByRole("button", { name: "Add feed" }).click();
    await page.getByRole("alert").waitFor();
    assert.match(await page.getByRole("alert").textContent(), /url: .*expected http\(s\)/);
    await form.getByLabel("URL or file path").fill(file);
    await form.getByLabel("Every").fill("10s");
    await form.getByRole("button", { name: "Add feed" }).click();
    await eventually(async () => assert.match(await page.getByRole("alert").textContent(), /interval: .*at least 1m/));
    assert.equal(await page.locator('tr[data-feed="ui-list"]').count(), 0);

    await form.getByLabel("Every").fill("1h");
    await form.getByRole("button", { name: "Add feed" }).click();
    const row = page.locator('tr[data-feed="ui-list"]');
    await row.waitFor();
    assert.match(await row.textContent(), /added by user:ada/);
    // The server imports it at once: status ok, its entries become bans.
    await eventually(async () => {
      await page.reload();
      await row.waitFor({ timeout: 2000 });
      assert.equal(await row.locator(".badge").textContent(), "ok");
    });
    assert.deepEqual(await feedBans(page, "ui-list"), ["198.51.100.90", "198.51.100.91"]);
    await shot(page, "22-feeds-added");

    // Refresh fetches now: an entry listed since is banned, one gone is revoked.
    writeFileSync(file, "198.51.100.91\n198.51.100.92\n198.51.100.93\n");
    await row.getByRole("button", { name: "Refresh ui-list" }).click();
    await eventually(async () => assert.equal((await row.locator("td").allTextContents())[7], "3"));
    assert.deepEqual(await feedBans(page, "ui-list"), ["198.51.100.91", "198.51.100.92", "198.51.100.93"]);

    // Remove, with a confirmation: the feed and its bans are gone.
    await row.getByRole("button", { name: "Remove ui-list" }).click();
    const confirm = page.getByRole("dialog");
    await confirm.getByText(/bans in force are revoked/).waitFor();
    await confirm.getByRole("button", { name: "Cancel" }).click();
    await confirm.waitFor({ state: "detached" });
    assert.equal(await row.count(), 1, "cancel removes nothing");
    await row.getByRole("button", { name: "Remove ui-list" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Remove feed" }).click();
    await row.waitFor({ state: "detached" });
    assert.deepEqual(await feedBans(page, "ui-list"), []);
    const revoked = await apiGet(page, "/api/v1/decisions?origin=feed&status=revoked&limit=1000");
    assert.equal(revoked.body.items.filter((d) => String(d.target).startsWith("198.51.100.9")).length, 4, JSON.stringify(revoked.body));
    // Feeds of server.toml have no remove button.
    assert.equal(await page.getByRole("button", { name: "Remove soc" }).count(), 0);
    await page.getByRole("button", { name: "Refresh soc" }).waitFor();
    await ctx.close();
  });

  test("a viewer sees no write buttons on policies, allowlists, feeds and agents", async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await signIn(page, base, credentials("FLEETBAN_CONSOLE_VIEWER"));
    await page.getByRole("link", { name: "Policies" }).click();
    await page.locator('tr[data-jail="web/sshd"]').waitFor();
    assert.equal(await page.getByRole("button", { name: /Add jail rule|Edit|Remove|Save rules/ }).count(), 0);
    assert.equal(await page.getByLabel(/^Rules/).getAttribute("readonly"), "");
    await shot(page, "21-policies-viewer");
    await page.getByRole("link", { name: "Allowlists" }).click();
    await page.getByTestId("allowlists").waitFor();
    assert.equal(await page.getByRole("form", { name: "Add to an allowlist" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: /Remove|Add/ }).count(), 0);
    assert.equal(await page.getByRole("button", { name: /Comment/ }).count(), 0);
    await page.getByRole("link", { name: "Feeds" }).click();
    await page.locator('tr[data-feed="soc"]').waitFor();
    assert.equal(await page.getByRole("form", { name: "Add a feed" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: /Refresh|Remove|Add feed/ }).count(), 0);
    await page.getByRole("link", { name: "Agents" }).click();
    await page.locator('tr[data-agent="host-a"]').waitFor();
    assert.equal(await page.getByRole("button", { name: /Enroll|Revoke/ }).count(), 0);
    assert.equal(await page.getByTestId("enrollment-tokens").count(), 0);
    // The API refuses a viewer's allowlist change anyway.
    const status = await page.evaluate(async () => {
      const s = JSON.parse(sessionStorage.getItem("fleetban.session"));
      const res = await fetch("/api/v1/allowlists", {
        method: "POST",
        headers: { Authorization: `Bearer ${s.access_token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ network: "10.9.9.9" }),
      });
      return res.status;
    });
    assert.equal(status, 403);
    await ctx.close();
  });

  test("agents: enroll a new agent with the command shown, see enforced counts, and revoke an agent", async () => {
    const ctx = await browser.newContext({ viewport: { width: 1366, height: 900 } });
    const page = await ctx.newPage();
    await signIn(page, base, credentials("FLEETBAN_CONSOLE_ADMIN"));
    // The overview names the propagation delay as time.
    assert.match(await page.getByTestId("agents-lag").textContent(), /propagation delay/);
    await page.getByRole("link", { name: "Agents", exact: true }).click();
    const a = page.locator('tr[data-agent="host-a"]');
    await a.waitFor();
    // Each agent reports what its firewall enforces.
    await eventually(async () => {
      await page.reload();
      await a.waitFor({ timeout: 2000 });
      assert.match(await a.locator(".enforced").textContent(), /^\d+ \(nftables\)$/);
    });
    assert.match(await a.locator(".drift").textContent(), /^\d+$/);

    await page.getByRole("button", { name: "Enroll an agent…" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("Group (optional)").fill("web");
    await dialog.getByLabel("Agents that may use it").fill("0");
    await dialog.getByRole("button", { name: "Create token" }).click();
    assert.match(await dialog.getByRole("alert").textContent(), /uses "0": expected 1 to 10000/);
    await dialog.getByLabel("Agents that may use it").fill("2");
    await dialog.getByLabel("Valid for").selectOption("24h");
    await dialog.getByRole("button", { name: "Create token" }).click();
    await dialog.waitFor({ state: "detached" });
    const command = (await page.getByTestId("enroll-command").locator("pre").textContent()).trim();
    const m = command.match(/^fleetban-agent enroll --config \/etc\/fleetban\/agent\.toml --server (https:\/\/\S+) --token (\S+)$/);
    assert.ok(m, command);
    await page.getByTestId("enrollment-tokens").getByText("0 / 2").waitFor();
    await shot(page, "18-agents-enroll");

    // The command works: run it (with this test's agent config) and the agent is enrolled in group web.
    const enroll = JSON.parse(process.env.FLEETBAN_CONSOLE_ENROLL);
    const args = command.split(" ").slice(1).map((w) => (w === "/etc/fleetban/agent.toml" ? enroll.config : w));
    const out = execFileSync(enroll.argv[0], [...enroll.argv.slice(1), ...args], { encoding: "utf8" });
    assert.match(out, /enrolled as agent host-c \(group web\)/);
    await page.reload();
    await page.getByTestId("enrollment-tokens").getByText("1 / 2").waitFor();

    // Revoke the token: enrolling with it again is refused.
    const tokenRow = page.getByTestId("enrollment-tokens").locator("tr", { hasText: "1 / 2" });
    const tokenId = (await tokenRow.locator("code").textContent()).trim();
    await tokenRow.getByRole("button", { name: `Revoke token ${tokenId}` }).click();
    await page.getByRole("dialog").getByText(/No agent can enroll with this token/).waitFor();
    await page.getByRole("dialog").getByRole("button", { name: "Revoke token" }).click();
    await page.getByRole("dialog").waitFor({ state: "detached" });
    await eventually(async () => assert.equal(await tokenRow.locator(".badge").textContent(), "revoked"));
    assert.equal(await tokenRow.getByRole("button", { name: /Revoke token/ }).count(), 0);
    let refused = null;
    try {
      execFileSync(enroll.argv[0], [...enroll.argv.slice(1), ...args], { encoding: "utf8", stdio: "pipe" });
    } catch (e) {
      refused = `${e.stdout}${e.stderr}`;
    }
    assert.ok(refused !== null, "enrolling with a revoked token must fail");
    assert.match(refused, /enrollment token \S+ has been revoked/);
    await page.reload();
    await page.getByTestId("enrollment-tokens").getByText("1 / 2").waitFor();
    await shot(page, "23-agents-token-revoked");

    // Revoke an agent, with a confirmation.
    const victim = process.env.FLEETBAN_CONSOLE_REVOKE;
    const row = page.locator(`tr[data-agent="${victim}"]`);
    await row.getByRole("button", { name: `Revoke ${victim}` }).click();
    const confirm = page.getByRole("dialog");
    await confirm.getByText(/stream is closed now/).waitFor();
    await confirm.getByRole("button", { name: "Cancel" }).click();
    await confirm.waitFor({ state: "detached" });
    assert.doesNotMatch(await row.textContent(), /revoked/, "cancel revokes nothing");
    await row.getByRole("button", { name: `Revoke ${victim}` }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Revoke agent" }).click();
    await page.getByRole("dialog").waitFor({ state: "detached" });
    await eventually(async () => assert.match(await row.textContent(), /revoked/));
    assert.equal(await row.getByRole("button", { name: /Revoke/ }).count(), 0);
    assert.doesNotMatch(await a.textContent(), /revoked/);
    await shot(page, "19-agents-revoked");
    await ctx.close();
  });
});
