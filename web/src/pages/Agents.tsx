// Agents: every host's health, version, last contact, what its firewall
// enforces and how far behind the block list it is; admins enroll new
// agents (a token and the command to run), revoke tokens and revoke agents.

import { useState } from "preact/hooks";
import { del, get, post } from "../api";
import { useCan } from "../auth";
import { Dialog } from "../components/Dialog";
import { Badge, describe, ErrorNote } from "../components/Status";
import { ago, behind, count, time } from "../format";
import { useLoad } from "../hooks";
import { useLiveReload } from "../live";
import type { Agent, CreatedEnrollmentToken, EnrollmentToken } from "../types";
import { checkName } from "../validate";

function status(a: Agent): string {
  return a.revoked_at ? "revoked" : a.health;
}


export function Agents() {
  const agents = useLoad(() => get<Agent[]>("/api/v1/agents"), []);
  useLiveReload(agents.reload, (m) => m.type === "decision", 2000);
  const canWrite = useCan("agents:write");
  const [enrolling, setEnrolling] = useState(false);
  const [created, setCreated] = useState<CreatedEnrollmentToken | null>(null);
  const [revoking, setRevoking] = useState<Agent | null>(null);
  const [revokeError, setRevokeError] = useState<string | null>(null);
  const [tokensTick, setTokensTick] = useState(0);
  const list = agents.data ?? [];
  return (
    <section>
      <h1>Agents</h1>
      <p class="muted">
        {list.filter((a) => a.health === "online" && !a.revoked_at).length} of {list.length} online. An agent is online when it was heard from in the last 90
        seconds; “behind” counts block-list versions it has yet to apply and how long ago the oldest of them was decided; “drift” counts differences between
        its kernel and the block list that it found and repaired since it started.
      </p>
      {canWrite && (
        <div class="toolbar">
          <button type="button" class="primary" onClick={() => setEnrolling(true)}>
            Enroll an agent…
          </button>
        </div>
      )}
      {created && <EnrollCommand created={created} onDone={() => setCreated(null)} />}
      <ErrorNote error={agents.error} />
      <div class="table-wrap">
        <table data-testid="agents">
          <thead>
            <tr>
              <th scope="col">Agent</th>
              <th scope="col">Status</th>
              <th scope="col">Group</th>
              <th scope="col">Version</th>
              <th scope="col">Last seen</th>
              <th scope="col">Block list</th>
              <th scope="col">Behind</th>
              <th scope="col">Enforced</th>
              <th scope="col">Drift</th>
              <th scope="col">Jails</th>
              <th scope="col">First seen</th>
              {canWrite && <th scope="col">Actions</th>}
            </tr>
          </thead>
          <tbody>
            {list.map((a) => (
              <tr key={a.id} data-agent={a.id}>
                <td>
                  {a.id}
                  {a.hostname && a.hostname !== a.id && <div class="muted small">on {a.hostname}</div>}
                </td>
                <td>
                  <Badge value={status(a)} />
                  {a.revoked_at && <div class="muted small">{time(a.revoked_at)}</div>}
                </td>
                <td>{a.group || "—"}</td>
                <td>{a.version}</td>
                <td title={time(a.last_seen)}>{ago(a.last_seen)}</td>
                <td>v{a.applied_version}</td>
                <td class="behind">{behind(a)}</td>
                <td class="enforced">
                  {a.firewall ? (
                    <>
                      {count(a.firewall.enforced)} <span class="muted small">({a.firewall.backend})</span>
                    </>
                  ) : (
                    <span class="muted">not reported</span>
                  )}
                </td>
                <td class="drift">{a.firewall ? <span class={a.firewall.drift_total > 0 ? "warn" : ""}>{count(a.firewall.drift_total)}</span> : "—"}</td>
                <td>{a.jails.join(", ") || "—"}</td>
                <td>{time(a.first_seen)}</td>
                {canWrite && (
                  <td>
                    {!a.revoked_at && (
                      <button type="button" class="danger small" aria-label={`Revoke ${a.id}`} onClick={() => setRevoking(a)}>
                        Revoke
                      </button>
                    )}
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!agents.loading && list.length === 0 && (
        <p class="muted">No agent has connected yet.{canWrite ? " Enroll one with the button above." : ""}</p>
      )}
      {canWrite && <EnrollmentTokens key={tokensTick} />}
      {enrolling && (
        <Enroll
          onClose={() => setEnrolling(false)}
          onDone={(c) => {
            setEnrolling(false);
            setCreated(c);
            setTokensTick((n) => n + 1);
          }}
        />
      )}
      {revoking && (
        <Dialog
          title={`Revoke ${revoking.id}`}
          submitLabel="Revoke agent"
          danger
          error={revokeError}
          onClose={() => {
            setRevoking(null);
            setRevokeError(null);
          }}
          onSubmit={() =>
            post(`/api/v1/agents/${encodeURIComponent(revoking.id)}/revoke`, {}).then(
              () => {
                setRevoking(null);
                setRevokeError(null);
                agents.reload();
              },
              (e) => setRevokeError(describe(e)),
            )
          }
        >
          <p>
            {revoking.id}'s stream is closed now and its certificate refused from then on. Its firewall keeps the bans it holds until they expire; to come back it
            needs a new enrollment token.
          </p>
        </Dialog>
      )}
    </section>
  );
}

const EXPIRIES = [
  ["1h", "1 hour"],
  ["24h", "1 day"],
  ["7d", "7 days"],
  ["30d", "30 days"],
];

function Enroll({ onClose, onDone }: { onClose: () => void; onDone: (c: CreatedEnrollmentToken) => void }) {
  const [group, setGroup] = useState("");
  const [ttl, setTtl] = useState("1h");
  const [uses, setUses] = useState("1");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async () => {
    const g = group.trim();
    const problem = (g ? checkName("group", g) : null) ?? (/^\d+$/.test(uses.trim()) && Number(uses) >= 1 && Number(uses) <= 10000 ? null : `uses ${JSON.stringify(uses.trim())}: expected 1 to 10000`);
    if (problem) return setError(problem);
    setBusy(true);
    try {
      onDone(await post<CreatedEnrollmentToken>("/api/v1/enrollment-tokens", { group: g || null, ttl, uses: Number(uses) }));
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title="Enroll an agent" submitLabel="Create token" onClose={onClose} onSubmit={submit} busy={busy} error={error}>
      <p class="muted">An enrollment token lets agents get their certificate once; the command to run on the host is shown next.</p>
      <label>
        Group (optional)
        <input name="group" value={group} onInput={(e) => setGroup(e.currentTarget.value)} placeholder="web" />
      </label>
      <label>
        Valid for
        <select name="ttl" value={ttl} onChange={(e) => setTtl(e.currentTarget.value)}>
          {EXPIRIES.map(([v, l]) => (
            <option key={v} value={v}>
              {l}
            </option>
          ))}
        </select>
      </label>
      <label>
        Agents that may use it
        <input name="uses" inputMode="numeric" value={uses} onInput={(e) => setUses(e.currentTarget.value)} />
      </label>
    </Dialog>
  );
}

/** The shell command an operator runs on the new host. */
export function enrollCommand(c: Pick<CreatedEnrollmentToken, "server_url" | "token">): string {
  const server = c.server_url ?? "https://SERVER:50051";
  return `fleetban-agent enroll --config /etc/fleetban/agent.toml --server ${server} --token ${c.token}`;
}

function EnrollCommand({ created, onDone }: { created: CreatedEnrollmentToken; onDone: () => void }) {
  const cmd = enrollCommand(created);
  return (
    <div class="notice" role="status" data-testid="enroll-command">
      <p>
        Token for {created.max_uses} agent{created.max_uses === 1 ? "" : "s"}
        {created.group ? ` of group ${created.group}` : ""}, valid until {time(created.expires_at)}. Run this on the new host (its{" "}
        <code>agent.toml</code> gives its id), then start the agent. The token is not shown again.
      </p>
      <pre class="cmd">
        <code>{cmd}</code>
      </pre>
      {!created.server_url && <p class="muted small">This server does not know the address agents reach it by: replace SERVER.</p>}
      <button type="button" onClick={() => void navigator.clipboard?.writeText(cmd)}>
        Copy command
      </button>{" "}
      <button type="button" onClick={onDone}>
        Done
      </button>
    </div>
  );
}

function tokenState(t: EnrollmentToken, now: number): string {
  if (t.revoked_at) return "revoked";
  if (t.uses >= t.max_uses) return "used";
  return Date.parse(t.expires_at) <= now ? "expired" : "active";
}

function EnrollmentTokens() {
  const tokens = useLoad(() => get<EnrollmentToken[]>("/api/v1/enrollment-tokens"), []);
  const [revoking, setRevoking] = useState<EnrollmentToken | null>(null);
  const [revokeError, setRevokeError] = useState<string | null>(null);
  const now = Date.now();
  return (
    <section class="card" aria-labelledby="enroll-tokens-title">
      <h2 id="enroll-tokens-title">Enrollment tokens</h2>
      <ErrorNote error={tokens.error} />
      <div class="table-wrap">
        <table data-testid="enrollment-tokens">
          <thead>
            <tr>
              <th scope="col">Token</th>
              <th scope="col">Group</th>
              <th scope="col">State</th>
              <th scope="col">Used</th>
              <th scope="col">Created</th>
              <th scope="col">Expires</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {(tokens.data ?? []).map((t) => {
              const state = tokenState(t, now);
              return (
                <tr key={t.id} data-token={t.id}>
                  <td>
                    <code>{t.id}</code>
                  </td>
                  <td>{t.group ?? "—"}</td>
                  <td>
                    <Badge value={state} />
                  </td>
                  <td>
                    {t.uses} / {t.max_uses}
                  </td>
                  <td>{time(t.created_at)}</td>
                  <td>{time(t.expires_at)}</td>
                  <td>
                    {state === "active" && (
                      <button type="button" class="danger small" aria-label={`Revoke token ${t.id}`} onClick={() => setRevoking(t)}>
                        Revoke
                      </button>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      {!tokens.loading && (tokens.data ?? []).length === 0 && <p class="muted">No enrollment token yet.</p>}
      {revoking && (
        <Dialog
          title={`Revoke token ${revoking.id}`}
          submitLabel="Revoke token"
          danger
          error={revokeError}
          onClose={() => {
            setRevoking(null);
            setRevokeError(null);
          }}
          onSubmit={() =>
            del(`/api/v1/enrollment-tokens/${encodeURIComponent(revoking.id)}`).then(
              () => {
                setRevoking(null);
                setRevokeError(null);
                tokens.reload();
              },
              (e) => setRevokeError(describe(e)),
            )
          }
        >
          <p>No agent can enroll with this token any more. Agents it already enrolled stay; revoke them one by one.</p>
        </Dialog>
      )}
    </section>
  );
}
