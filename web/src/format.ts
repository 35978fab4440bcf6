// Display helpers: times, durations and counts as people read them.

export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "never";
  const s = Math.round((now - Date.parse(iso)) / 1000);
  if (s < 0) return "in " + span(-s);
  if (s < 5) return "just now";
  return span(s) + " ago";
}

export function until(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "permanent";
  const s = Math.round((Date.parse(iso) - now) / 1000);
  return s <= 0 ? "ended " + span(-s) + " ago" : "in " + span(s);
}

export function span(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d ${Math.floor((seconds % 86400) / 3600)}h`;
}

export function time(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function count(n: number): string {
  return n.toLocaleString();
}

/** The /24 (IPv4) or /64 (IPv6) prefix holding an address. */
export function prefixOf(ip: string): string {
  if (ip.includes(".")) {
    const parts = ip.split(".");
    return parts.length === 4 ? `${parts[0]}.${parts[1]}.${parts[2]}.0/24` : ip;
  }
  const full = expand6(ip);
  return full ? `${full.slice(0, 4).map((h) => h.replace(/^0+(?=.)/, "")).join(":")}::/64` : ip;
}

function expand6(ip: string): string[] | null {
  const [head, tail] = ip.split("::");
  const h = head ? head.split(":") : [];
  const t = tail !== undefined ? (tail ? tail.split(":") : []) : [];
  if (tail === undefined && h.length !== 8) return null;
  const fill = Array(8 - h.length - t.length).fill("0");
  return [...h, ...fill, ...t];
}

/** How far behind the block list an agent is: versions, and for how long. */
export function behind(a: { lag: number; lag_seconds: number }): string {
  if (a.lag === 0) return "up to date";
  return `${count(a.lag)} version${a.lag === 1 ? "" : "s"}, ${span(a.lag_seconds)}`;
}
