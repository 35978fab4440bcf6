// Agents: every host's health, version, last contact, enforced block-list
// version and how far behind it is.

import { get } from "../api";
import { Badge, ErrorNote } from "../components/Status";
import { ago, time } from "../format";
import { useLoad } from "../hooks";
import { useLiveReload } from "../live";
import type { Agent } from "../types";

export function Agents() {
  const agents = useLoad(() => get<Agent[]>("/api/v1/agents"), []);
  useLiveReload(agents.reload, (m) => m.type === "decision", 2000);
  const list = agents.data ?? [];
  return (
    <section>
      <h1>Agents</h1>
      <p class="muted">
        {list.filter((a) => a.health === "online").length} of {list.length} online. An agent is online when it was heard from in the last 90 seconds;
        “behind” counts block-list versions it has yet to apply.
      </p>
      <ErrorNote error={agents.error} />
      <div class="table-wrap">
        <table data-testid="agents">
          <thead>
            <tr>
              <th scope="col">Agent</th>
              <th scope="col">Status</th>
              <th scope="col">Version</th>
              <th scope="col">Last seen</th>
              <th scope="col">Block list</th>
              <th scope="col">Behind</th>
              <th scope="col">Jails</th>
              <th scope="col">First seen</th>
            </tr>
          </thead>
          <tbody>
            {list.map((a) => (
              <tr key={a.id}>
                <td>
                  {a.id}
                  {a.hostname && a.hostname !== a.id && <div class="muted small">on {a.hostname}</div>}
                </td>
                <td>
                  <Badge value={a.health} />
                </td>
                <td>{a.version}</td>
                <td title={time(a.last_seen)}>{ago(a.last_seen)}</td>
                <td>v{a.applied_version}</td>
                <td>{a.lag}</td>
                <td>{a.jails.join(", ") || "—"}</td>
                <td>{time(a.first_seen)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!agents.loading && list.length === 0 && <p class="muted">No agent has connected yet. Start one with <code>fleetban-agent run --config …</code>.</p>}
    </section>
  );
}
