// API tokens (admins only): for SOC tools and scripts, with scopes and an
// expiry; the secret is shown once, when created.

import { useState } from "preact/hooks";
import { del, get, post } from "../api";
import { Dialog } from "../components/Dialog";
import { Badge, describe, ErrorNote } from "../components/Status";
import { ago, time } from "../format";
import { useLoad } from "../hooks";
import type { Token } from "../types";

// Every scope an API token may hold (server/src/auth/scope.rs); managing
// users, tokens and bouncer keys takes a signed-in admin, never a token.
const SCOPES = [
  "decisions:read",
  "decisions:write",
  "events:read",
  "agents:read",
  "agents:write",
  "policies:read",
  "policies:write",
  "stats:read",
  "audit:read",
];

function state(t: Token): string {
  if (t.revoked_at) return "revoked";
  if (t.expires_at && Date.parse(t.expires_at) < Date.now()) return "expired";
  return "active";
}

export function Tokens() {
  const tokens = useLoad(() => get<Token[]>("/api/v1/tokens"), []);
  const [creating, setCreating] = useState(false);
  const [secret, setSecret] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  return (
    <section>
      <h1>API tokens</h1>
      <div class="toolbar">
        <button type="button" class="primary" onClick={() => setCreating(true)}>
          New token…
        </button>
      </div>
      {secret && (
        <div class="notice" role="status">
          <p>Copy this token now: it is not shown again.</p>
          <code class="secret" data-testid="token-secret">
            {secret}
          </code>{" "}
          <button type="button" onClick={() => void navigator.clipboard?.writeText(secret)}>
            Copy
          </button>{" "}
          <button type="button" onClick={() => setSecret(null)}>
            Done
          </button>
        </div>
      )}
      <ErrorNote error={tokens.error || error} />
      <div class="table-wrap">
        <table data-testid="tokens">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Scopes</th>
              <th scope="col">Status</th>
              <th scope="col">Created</th>
              <th scope="col">Expires</th>
              <th scope="col">Last used</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {(tokens.data ?? []).map((t) => (
              <tr key={t.id}>
                <td>{t.name}</td>
                <td>{t.scopes.join(", ")}</td>
                <td>
                  <Badge value={state(t)} />
                </td>
                <td>
                  {time(t.created_at)} <span class="muted">by {t.created_by}</span>
                </td>
                <td>{t.expires_at ? time(t.expires_at) : "never"}</td>
                <td>{ago(t.last_used_at)}</td>
                <td>
                  {state(t) === "active" && (
                    <button
                      type="button"
                      class="danger small"
                      onClick={() => del(`/api/v1/tokens/${encodeURIComponent(t.id)}`).then(tokens.reload, setError)}
                    >
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {creating && (
        <CreateToken
          onClose={() => setCreating(false)}
          onDone={(s) => {
            setCreating(false);
            setSecret(s);
            tokens.reload();
          }}
        />
      )}
    </section>
  );
}

function CreateToken({ onClose, onDone }: { onClose: () => void; onDone: (secret: string) => void }) {
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState<Set<string>>(new Set(["decisions:read"]));
  const [expires, setExpires] = useState("");
  const [error, setError] = useState<string | null>(null);
  const submit = async () => {
    if (scopes.size === 0) return setError("Choose at least one scope.");
    try {
      const body = { name: name.trim(), scopes: [...scopes], expires_at: expires ? new Date(expires).toISOString() : null };
      const created = await post<{ token: string }>("/api/v1/tokens", body);
      onDone(created.token);
    } catch (e) {
      setError(describe(e));
    }
  };
  return (
    <Dialog title="New API token" submitLabel="Create" onClose={onClose} onSubmit={submit} error={error}>
      <label>
        Name
        <input name="name" required value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="soar" />
      </label>
      <fieldset>
        <legend>Scopes</legend>
        {SCOPES.map((s) => (
          <label key={s} class="inline">
            <input
              type="checkbox"
              checked={scopes.has(s)}
              onChange={(e) => {
                const n = new Set(scopes);
                if (e.currentTarget.checked) n.add(s);
                else n.delete(s);
                setScopes(n);
              }}
            />{" "}
            {s}
          </label>
        ))}
      </fieldset>
      <label>
        Expires (optional)
        <input name="expires" type="datetime-local" value={expires} onInput={(e) => setExpires(e.currentTarget.value)} />
      </label>
    </Dialog>
  );
}
