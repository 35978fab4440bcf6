// Client-side checks that mirror the API's, so a mistake is named before a
// round trip; the API checks again and its message is shown when it
// refuses anyway.

/** Largest maxretry the API takes (server/src/http/api/policies.rs). */
export const MAX_MAXRETRY = 1_000_000;

/** Group and jail names: 1 to 64 letters, digits, '-', '_' or '.'. */
export function checkName(field: string, value: string, allowAll = false): string | null {
  if (allowAll && value === "*") return null;
  if (/^[A-Za-z0-9._-]{1,64}$/.test(value)) return null;
  return `${field} ${JSON.stringify(value)}: expected 1 to 64 characters among letters, digits, '-', '_' and '.'${allowAll ? ', or "*" for every agent' : ""}`;
}

/** maxretry as typed: empty (the agent's own setting) or 1 to 1,000,000. */
export function checkMaxretry(text: string): string | null {
  const t = text.trim();
  if (t === "") return null;
  if (!/^\d+$/.test(t) || Number(t) < 1 || Number(t) > MAX_MAXRETRY) {
    return `maxretry ${JSON.stringify(t)}: expected 1 to ${MAX_MAXRETRY}`;
  }
  return null;
}

const UNITS = /^(ns|nsec|us|usec|ms|msec|s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs|hour|hours|d|day|days|w|week|weeks|M|month|months|y|year|years)$/;

/** A duration as the API parses them (humantime): `10m`, `1h 30m`, `7d`. */
export function checkDuration(field: string, text: string): string | null {
  const t = text.trim();
  if (t === "") return null;
  const parts = t.match(/\d+\s*[A-Za-z]+/g);
  const ok =
    parts !== null &&
    parts.join("").replace(/\s/g, "") === t.replace(/\s/g, "") &&
    parts.every((p) => UNITS.test(p.replace(/^\d+\s*/, ""))) &&
    parts.some((p) => Number(p.match(/^\d+/)?.[0]) > 0);
  return ok ? null : `${field} ${JSON.stringify(t)}: expected a duration such as 10m, 1h or 7d`;
}
