// The fleet at a glance: live counters, bans and events over time, the
// top offending addresses, prefixes, jails and hosts, agents online and
// offline with how far behind the block list they are, and the latest
// decisions as they arrive.

import { useMemo } from "preact/hooks";
import { get } from "../api";
import { useCan } from "../auth";
import { Chart } from "../components/Chart";
import { Badge, ErrorNote } from "../components/Status";
import { ago, behind, count, prefixOf, span } from "../format";
import { useLoad } from "../hooks";
import { useLiveReload } from "../live";
import { onLink } from "../router";
import type { Agent, Decision, Group, Page, Stats } from "../types";

const DAY = 24 * 3600 * 1000;

function since(): string {
  return new Date(Date.now() - DAY).toISOString();
}

function sum(s: Stats | undefined): number {
  return s ? s.buckets.reduce((a, b) => a + b.count, 0) : 0;
}

function Counter({ label, value, id }: { label: string; value: string; id: string }) {
  return (
    <div class="counter" data-testid={id}>
      <div class="value">{value}</div>
      <div class="label">{label}</div>
    </div>
  );
}

function Top({ title, rows, link }: { title: string; rows: Group[]; link?: (key: string) => string }) {
  const max = Math.max(1, ...rows.map((r) => r.count));
  return (
    <section class="card top-list" aria-label={title}>
      <h2>{title}</h2>
      {rows.length === 0 ? (
        <p class="muted">Nothing in the last 24 hours.</p>
      ) : (
        <ol>
          {rows.map((r) => (
            <li key={r.key}>
              <span class="bar" style={{ width: `${(100 * r.count) / max}%` }} aria-hidden="true" />
              {link ? (
                <a href={link(r.key)} onClick={onLink}>
                  {r.key}
                </a>
              ) : (
                <span>{r.key}</span>
              )}
              <span class="n">{count(r.count)}</span>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}

function prefixes(rows: Group[]): Group[] {
  const by = new Map<string, Group>();
  for (const r of rows) {
    const key = prefixOf(r.key);
    const g = by.get(key);
    if (g) g.count += r.count;
    else by.set(key, { ...r, key });
  }
  return [...by.values()].sort((a, b) => b.count - a.count).slice(0, 10);
}

export function Overview() {
  const events = useCan("events:read");
  const agentsOk = useCan("agents:read");
  const stats = useLoad(async () => {
    const q = { since: since(), step: "1h" };
    const [d, e] = await Promise.all([
      get<Stats>("/api/v1/stats", { ...q, series: "decisions" }),
      get<Stats>("/api/v1/stats", { ...q, series: "events" }),
    ]);
    return { d, e };
  }, []);
  const latest = useLoad(() => get<Page<Decision>>("/api/v1/decisions", { limit: 10 }), []);
  const active = useLoad(() => get<Page<Decision>>("/api/v1/decisions", { status: "active", limit: 1000 }), []);
  const tops = useLoad(async () => {
    if (!events) return null;
    const q = { since: since() };
    const [ip, jail, agent] = await Promise.all([
      get<Group[]>("/api/v1/events/aggregate", { ...q, by: "ip", limit: 1000 }),
      get<Group[]>("/api/v1/events/aggregate", { ...q, by: "jail", limit: 10 }),
      get<Group[]>("/api/v1/events/aggregate", { ...q, by: "agent", limit: 10 }),
    ]);
    return { ip: ip.slice(0, 10), prefix: prefixes(ip), jail, agent };
  }, [events]);
  const agents = useLoad(() => (agentsOk ? get<Agent[]>("/api/v1/agents") : Promise.resolve([])), [agentsOk]);

  useLiveReload(
    () => {
      latest.reload();
      active.reload();
      stats.reload();
      agents.reload();
    },
    (m) => m.type === "decision",
  );
  useLiveReload(
    () => {
      tops.reload();
      stats.reload();
    },
    (m) => m.type === "event",
    3000,
  );

  const chart = useMemo(() => {
    if (!stats.data) return null;
    const { d, e } = stats.data;
    return {
      times: e.buckets.map((b) => Date.parse(b.start) / 1000),
      bans: [{ label: "Bans", color: "#d92d20", values: d.buckets.map((b) => b.count) }],
      events: [{ label: "Failures", color: "#1570ef", values: e.buckets.map((b) => b.count) }],
    };
  }, [stats.data]);

  const list = agents.data ?? [];
  const online = list.filter((a) => a.health === "online").length;
  // Propagation delay: the agent furthest behind, in time since the oldest
  // decision it has yet to apply, and in versions.
  const worst = list.filter((a) => !a.revoked_at).reduce<Agent | null>((w, a) => (!w || a.lag_seconds > w.lag_seconds || (a.lag_seconds === w.lag_seconds && a.lag > w.lag) ? a : w), null);
  const activeCount = active.data ? `${count(active.data.items.length)}${active.data.next_cursor ? "+" : ""}` : "…";

  return (
    <section>
      <h1>Overview</h1>
      <ErrorNote error={stats.error || latest.error || tops.error || agents.error} />
      <div class="counters">
        <Counter id="active-bans" label="active bans" value={activeCount} />
        <Counter id="bans-24h" label="bans in 24 h" value={stats.data ? count(sum(stats.data.d)) : "…"} />
        {events && <Counter id="events-24h" label="failures in 24 h" value={stats.data ? count(sum(stats.data.e)) : "…"} />}
        {agentsOk && <Counter id="agents-online" label="agents online" value={agents.data ? `${online} / ${list.length}` : "…"} />}
        {agentsOk && (
          <Counter
            id="agents-lag"
            label={worst && worst.lag > 0 ? `propagation delay (${count(worst.lag)} version${worst.lag === 1 ? "" : "s"} behind, ${worst.id})` : "propagation delay (every agent up to date)"}
            value={agents.data ? (worst && worst.lag > 0 ? span(worst.lag_seconds) : "0s") : "…"}
          />
        )}
      </div>
      {chart && (
        <div class="charts">
          <Chart title="Bans per hour" times={chart.times} series={chart.bans} />
          {events && <Chart title="Failures per hour" times={chart.times} series={chart.events} />}
        </div>
      )}
      <section class="card" aria-label="Latest decisions">
        <h2>Latest decisions</h2>
        <div class="table-wrap">
          <table data-testid="latest-decisions">
            <thead>
              <tr>
                <th scope="col">Target</th>
                <th scope="col">Origin</th>
                <th scope="col">Reason</th>
                <th scope="col">When</th>
                <th scope="col">Status</th>
              </tr>
            </thead>
            <tbody>
              {(latest.data?.items ?? []).map((d) => (
                <tr key={d.id}>
                  <td>
                    <a href={`/ips/${encodeURIComponent(d.target.split("/")[0])}`} onClick={onLink}>
                      {d.target}
                    </a>
                  </td>
                  <td>{d.origin}</td>
                  <td>{d.reason}</td>
                  <td>{ago(d.created_at)}</td>
                  <td>
                    <Badge value={d.status} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        {latest.data?.items.length === 0 && <p class="muted">No decisions yet.</p>}
      </section>
      {tops.data && (
        <div class="grid">
          <Top title="Top addresses" rows={tops.data.ip} link={(k) => `/ips/${encodeURIComponent(k)}`} />
          <Top title="Top prefixes" rows={tops.data.prefix} link={(k) => `/decisions?ip=${encodeURIComponent(k)}`} />
          <Top title="Top jails" rows={tops.data.jail} />
          <Top title="Top hosts" rows={tops.data.agent} />
        </div>
      )}
      {agentsOk && (
        <section class="card" aria-label="Agents">
          <h2>
            Agents{" "}
            <a class="small" href="/agents" onClick={onLink}>
              all agents →
            </a>
          </h2>
          <ul class="agents-mini">
            {list.map((a) => (
              <li key={a.id}>
                <Badge value={a.health} /> {a.id}
                {a.hostname && a.hostname !== a.id && <span class="muted"> on {a.hostname}</span>}
                <span class="muted">
                  {" "}
                  · seen {ago(a.last_seen)} · {behind(a)}
                </span>
              </li>
            ))}
          </ul>
          {list.length === 0 && <p class="muted">No agent has connected yet.</p>}
        </section>
      )}
    </section>
  );
}
