// Feeds: the block lists the servers import on a schedule, with the last
// import of each. Feeds are configured in server.toml (`[[feed]]`); the API
// lists them and their status.

import { get } from "../api";
import { Badge, ErrorNote } from "../components/Status";
import { ago, count, span, time } from "../format";
import { useLoad } from "../hooks";
import type { Feed } from "../types";

function health(f: Feed): string {
  if (!f.status) return "pending";
  return f.status.last_error ? "failing" : "ok";
}

export function Feeds() {
  const feeds = useLoad(() => get<Feed[]>("/api/v1/feeds"), []);
  const list = feeds.data ?? [];
  return (
    <section>
      <h1>Feeds</h1>
      <p class="muted">
        Block lists (one address or prefix a line) imported on a schedule; their bans have origin <code>feed</code>. They are configured in the servers'{" "}
        <code>server.toml</code> (<code>[[feed]]</code>).
      </p>
      <ErrorNote error={feeds.error} />
      <div class="table-wrap">
        <table data-testid="feeds">
          <thead>
            <tr>
              <th scope="col">Feed</th>
              <th scope="col">Status</th>
              <th scope="col">Source</th>
              <th scope="col">Every</th>
              <th scope="col">Ban time</th>
              <th scope="col">Last fetch</th>
              <th scope="col">Last success</th>
              <th scope="col">Entries</th>
              <th scope="col">Invalid lines</th>
              <th scope="col">Last error</th>
            </tr>
          </thead>
          <tbody>
            {list.map((f) => (
              <tr key={f.name} data-feed={f.name}>
                <td>
                  {f.name}
                  {!f.configured && <div class="muted small">configured on another replica</div>}
                </td>
                <td>
                  <Badge value={health(f)} />
                </td>
                <td class="wrap">{f.source ? <code>{f.source}</code> : "—"}</td>
                <td>{f.interval_seconds == null ? "—" : span(f.interval_seconds)}</td>
                <td>{f.bantime_seconds == null ? "while listed" : span(f.bantime_seconds)}</td>
                <td title={time(f.status?.last_attempt)}>{f.status ? ago(f.status.last_attempt) : "not yet"}</td>
                <td title={time(f.status?.last_success)}>{ago(f.status?.last_success)}</td>
                <td>{f.status ? count(f.status.entries) : "—"}</td>
                <td>{f.status ? count(f.status.invalid_lines) : "—"}</td>
                <td class="wrap">{f.status?.last_error ?? "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!feeds.loading && list.length === 0 && (
        <p class="muted" data-testid="no-feeds">
          No feed is configured. Add a <code>[[feed]]</code> with a <code>name</code> and a <code>url</code> or <code>path</code> to server.toml (see
          docs/configuration.md).
        </p>
      )}
    </section>
  );
}
