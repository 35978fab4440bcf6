// IP lookup: everything one address did across the fleet, as a timeline of
// its failures and the decisions about it, with counts per host and jail.

import { useState } from "preact/hooks";
import { get } from "../api";
import { Badge, ErrorNote } from "../components/Status";
import { time } from "../format";
import { useLoad } from "../hooks";
import { useLiveReload } from "../live";
import { navigate } from "../router";
import type { Group, IpReport } from "../types";

interface Line {
  at: string;
  kind: "failure" | "ban" | "revoke";
  text: string;
}

function timeline(r: IpReport): Line[] {
  const lines: Line[] = r.recent_events.map((e) => ({
    at: e.occurred_at,
    kind: "failure",
    text: `failure in ${e.jail} on ${e.agent}${e.user ? ` (user ${e.user})` : ""}`,
  }));
  for (const d of r.decisions) {
    lines.push({ at: d.created_at, kind: "ban", text: `${d.origin} ban of ${d.target} by ${d.creator}: ${d.reason}` });
    if (d.revoked) lines.push({ at: d.revoked.at, kind: "revoke", text: `ban of ${d.target} revoked by ${d.revoked.by}${d.revoked.reason ? `: ${d.revoked.reason}` : ""}` });
  }
  return lines.sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
}

function Counts({ title, rows }: { title: string; rows: Group[] }) {
  return (
    <section class="card" aria-label={title}>
      <h2>{title}</h2>
      {rows.length === 0 ? (
        <p class="muted">None.</p>
      ) : (
        <table>
          <tbody>
            {rows.map((g) => (
              <tr key={g.key}>
                <th scope="row">{g.key}</th>
                <td>{g.count}</td>
                <td class="muted">
                  {time(g.first)} – {time(g.last)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function IpLookup({ ip }: { ip: string }) {
  const [draft, setDraft] = useState(ip);
  const report = useLoad(() => (ip ? get<IpReport>(`/api/v1/ips/${encodeURIComponent(ip)}`) : Promise.resolve(null)), [ip]);
  useLiveReload(report.reload, (m) => (m.type === "event" && m.data.ip === ip) || (m.type === "decision" && !!ip));
  const r = report.data;
  return (
    <section>
      <h1>IP lookup</h1>
      <form
        class="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          if (draft.trim()) navigate(`/ips/${encodeURIComponent(draft.trim())}`);
        }}
      >
        <label>
          Address
          <input name="ip" value={draft} onInput={(e) => setDraft(e.currentTarget.value)} placeholder="203.0.113.7" required />
        </label>
        <button type="submit" class="primary">
          Look up
        </button>
      </form>
      <ErrorNote error={report.error} />
      {r && (
        <>
          <p class="verdict" data-testid="verdict">
            <strong>{r.ip}</strong> is {r.banned ? <Badge value="banned" /> : <Badge value="not banned" />}
          </p>
          <div class="grid">
            <Counts title="Failures per host" rows={r.events_by_agent} />
            <Counts title="Failures per jail" rows={r.events_by_jail} />
          </div>
          <section class="card" aria-label="Timeline">
            <h2>Timeline</h2>
            <ol class="timeline">
              {timeline(r).map((l, i) => (
                <li key={i} class={l.kind}>
                  <time dateTime={l.at}>{time(l.at)}</time> <Badge value={l.kind} /> {l.text}
                </li>
              ))}
            </ol>
            {r.recent_events.length === 0 && r.decisions.length === 0 && <p class="muted">The fleet has seen nothing from this address.</p>}
          </section>
        </>
      )}
    </section>
  );
}
