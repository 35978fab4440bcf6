// Feeds: the block lists the servers import on a schedule, with the last
// import of each. Feeds come from server.toml (`[[feed]]`) or are added
// here; operators and admins add, refresh and remove the latter, viewers
// read.

import { useState } from "preact/hooks";
import { del, get, post } from "../api";
import { useCan } from "../auth";
import { Dialog } from "../components/Dialog";
import { Badge, describe, ErrorNote } from "../components/Status";
import { ago, count, span, time } from "../format";
import { useLoad } from "../hooks";
import type { Feed } from "../types";

function health(f: Feed): string {
  if (!f.status) return "pending";
  return f.status.last_error ? "failing" : "ok";
}

/** The request adding a feed: a source with `://` is a URL, else a path. */
export function newFeed(name: string, source: string, interval: string, bantime: string) {
  const s = source.trim();
  return {
    name: name.trim(),
    ...(s.includes("://") ? { url: s } : { path: s }),
    interval: interval.trim() || null,
    bantime: bantime.trim() || null,
  };
}

function AddFeed({ onAdded }: { onAdded: () => void }) {
  const [name, setName] = useState("");
  const [source, setSource] = useState("");
  const [every, setEvery] = useState("1h");
  const [bantime, setBantime] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const add = async () => {
    setBusy(true);
    try {
      await post("/api/v1/feeds", newFeed(name, source, every, bantime));
      setName("");
      setSource("");
      setError(null);
      onAdded();
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <form
        class="filters"
        aria-label="Add a feed"
        onSubmit={(e) => {
          e.preventDefault();
          void add();
        }}
      >
        <label>
          Name
          <input name="name" required value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="spamhaus-drop" />
        </label>
        <label>
          URL or file path
          <input name="source" required value={source} onInput={(e) => setSource(e.currentTarget.value)} placeholder="https://… or /var/lib/fleetban/list.txt" />
        </label>
        <label>
          Every
          <input name="interval" value={every} onInput={(e) => setEvery(e.currentTarget.value)} placeholder="1h" size={6} />
        </label>
        <label>
          Ban time (empty: while listed)
          <input name="bantime" value={bantime} onInput={(e) => setBantime(e.currentTarget.value)} placeholder="1d" size={6} />
        </label>
        <button type="submit" class="primary" disabled={busy}>
          Add feed
        </button>
      </form>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </>
  );
}

export function Feeds() {
  const feeds = useLoad(() => get<Feed[]>("/api/v1/feeds"), []);
  const canWrite = useCan("policies:write");
  const [refreshing, setRefreshing] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [removing, setRemoving] = useState<Feed | null>(null);
  const [removeError, setRemoveError] = useState<string | null>(null);
  const list = feeds.data ?? [];
  const refresh = async (name: string) => {
    setRefreshing(name);
    try {
      await post(`/api/v1/feeds/${encodeURIComponent(name)}/refresh`, {});
      setActionError(null);
      feeds.reload();
    } catch (e) {
      setActionError(describe(e));
    } finally {
      setRefreshing(null);
    }
  };
  return (
    <section>
      <h1>Feeds</h1>
      <p class="muted">
        Block lists (one address or prefix a line) imported on a schedule by every server; their bans have origin <code>feed</code>. Feeds come from the
        servers' <code>server.toml</code> (<code>[[feed]]</code>) or are added here; removing one revokes its bans.
      </p>
      {canWrite && <AddFeed onAdded={() => feeds.reload()} />}
      {actionError && (
        <p class="error" role="alert">
          {actionError}
        </p>
      )}
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
              {canWrite && <th scope="col">Actions</th>}
            </tr>
          </thead>
          <tbody>
            {list.map((f) => (
              <tr key={f.name} data-feed={f.name}>
                <td>
                  {f.name}
                  {!f.configured && <div class="muted small">configured on another replica</div>}
                  {f.added_by ? (
                    <div class="muted small">added by {f.added_by}</div>
                  ) : (
                    f.configured && <div class="muted small">server.toml</div>
                  )}
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
                {canWrite && (
                  <td class="actions">
                    {f.configured && (
                      <button
                        type="button"
                        class="small"
                        aria-label={`Refresh ${f.name}`}
                        disabled={refreshing === f.name}
                        onClick={() => void refresh(f.name)}
                      >
                        {refreshing === f.name ? "Fetching…" : "Refresh"}
                      </button>
                    )}{" "}
                    {f.added_by && (
                      <button type="button" class="danger small" aria-label={`Remove ${f.name}`} onClick={() => setRemoving(f)}>
                        Remove
                      </button>
                    )}
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!feeds.loading && list.length === 0 && (
        <p class="muted" data-testid="no-feeds">
          No feed yet.{" "}
          {canWrite
            ? "Add one above, or a [[feed]] to server.toml (see docs/configuration.md)."
            : "Operators add them here or in server.toml (see docs/configuration.md)."}
        </p>
      )}
      {removing && (
        <Dialog
          title={`Remove feed ${removing.name}`}
          submitLabel="Remove feed"
          danger
          error={removeError}
          onClose={() => {
            setRemoving(null);
            setRemoveError(null);
          }}
          onSubmit={() =>
            del(`/api/v1/feeds/${encodeURIComponent(removing.name)}`).then(
              () => {
                setRemoving(null);
                setRemoveError(null);
                feeds.reload();
              },
              (e) => setRemoveError(describe(e)),
            )
          }
        >
          <p>
            No server imports it any more, and its bans in force are revoked on every agent.
          </p>
        </Dialog>
      )}
    </section>
  );
}
