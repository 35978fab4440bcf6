// Shared by the browser tests and the measurement scripts: Debian's
// Chromium driven by playwright-core (no browser download), and signing in
// through the console's own form.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Running as root (CI) needs --no-sandbox.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
}

/** `user:password` from an environment variable. */
export function credentials(name) {
  const v = process.env[name];
  if (!v || !v.includes(":")) throw new Error(`${name} must be user:password`);
  const i = v.indexOf(":");
  return { user: v.slice(0, i), password: v.slice(i + 1) };
}

export async function signIn(page, base, { user, password }) {
  await page.goto(base + "/");
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Overview" }).waitFor();
}

export function screenshots() {
  const dir = process.env.FLEETBAN_CONSOLE_SCREENSHOTS ?? new URL("../../target/console-screenshots/", import.meta.url).pathname;
  mkdirSync(dir, { recursive: true });
  return (page, name) => page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
}
