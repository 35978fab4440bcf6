// Allowlists: networks never banned, fleet-wide or for one agent group.
// Correlation and the agents refuse to ban them; operators and admins add
// and remove entries and say why each is there (a comment), viewers read.

import { useState } from "preact/hooks";
import { del, get, patch, post, withQuery } from "../api";
import { useCan } from "../auth";
import { Dialog } from "../components/Dialog";
import { describe, ErrorNote } from "../components/Status";
import { useLoad } from "../hooks";
import type { Allowlists as Lists } from "../types";

interface Entry {
  network: string;
  group: string | null;
  comment: string | null;
}

function entries(l: Lists): Entry[] {
  const out: Entry[] = l.global.map((i) => ({ ...i, group: null }));
  for (const [group, items] of Object.entries(l.groups)) for (const i of items) out.push({ ...i, group });
  return out;
}

export function Allowlists() {
  const lists = useLoad(() => get<Lists>("/api/v1/allowlists"), []);
  const canWrite = useCan("policies:write");
  const [network, setNetwork] = useState("");
  const [group, setGroup] = useState("");
  const [comment, setComment] = useState("");
  const [editing, setEditing] = useState<Entry | null>(null);
  const [editText, setEditText] = useState("");
  const [editError, setEditError] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [removing, setRemoving] = useState<Entry | null>(null);
  const [removeError, setRemoveError] = useState<string | null>(null);
  const add = async () => {
    setBusy(true);
    try {
      await post("/api/v1/allowlists", { network: network.trim(), group: group.trim() || null, comment: comment.trim() || null });
      setNetwork("");
      setComment("");
      setError(null);
      lists.reload();
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  };
  const list = lists.data ? entries(lists.data) : [];
  return (
    <section>
      <h1>Allowlists</h1>
      <p class="muted">
        Addresses and prefixes here are never banned: fleet-wide, or for the agents of one group. A manual ban of one is refused; bans already in force stay
        until revoked.
      </p>
      {canWrite && (
        <form
          class="filters"
          aria-label="Add to an allowlist"
          onSubmit={(e) => {
            e.preventDefault();
            void add();
          }}
        >
          <label>
            Address or CIDR
            <input name="network" required value={network} onInput={(e) => setNetwork(e.currentTarget.value)} placeholder="10.0.0.0/8" />
          </label>
          <label>
            Group (empty: fleet-wide)
            <input name="group" value={group} onInput={(e) => setGroup(e.currentTarget.value)} placeholder="web" />
          </label>
          <label>
            Why (comment)
            <input name="comment" maxLength={200} value={comment} onInput={(e) => setComment(e.currentTarget.value)} placeholder="uptime monitoring" />
          </label>
          <button type="submit" class="primary" disabled={busy}>
            Add
          </button>
        </form>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <ErrorNote error={lists.error} />
      <div class="table-wrap">
        <table data-testid="allowlists">
          <thead>
            <tr>
              <th scope="col">Network</th>
              <th scope="col">Applies to</th>
              <th scope="col">Comment</th>
              {canWrite && <th scope="col">Actions</th>}
            </tr>
          </thead>
          <tbody>
            {list.map((e) => (
              <tr key={`${e.group ?? ""}|${e.network}`} data-network={e.network}>
                <td>
                  <code>{e.network}</code>
                </td>
                <td>{e.group === null ? "the whole fleet" : `group ${e.group}`}</td>
                <td class="wrap" data-testid="comment">
                  {e.comment ?? <span class="muted">—</span>}
                </td>
                {canWrite && (
                  <td class="actions">
                    <button
                      type="button"
                      class="small"
                      aria-label={`Edit comment of ${e.network}`}
                      onClick={() => {
                        setEditing(e);
                        setEditText(e.comment ?? "");
                      }}
                    >
                      Comment
                    </button>{" "}
                    <button type="button" class="danger small" aria-label={`Remove ${e.network}`} onClick={() => setRemoving(e)}>
                      Remove
                    </button>
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!lists.loading && list.length === 0 && <p class="muted">No allowlist entry.</p>}
      {lists.data && <p class="muted small">Policy version {lists.data.policy_version}.</p>}
      {editing && (
        <Dialog
          title={`Comment on ${editing.network}`}
          submitLabel="Save"
          error={editError}
          onClose={() => {
            setEditing(null);
            setEditError(null);
          }}
          onSubmit={() =>
            patch("/api/v1/allowlists", { network: editing.network, group: editing.group, comment: editText.trim() }).then(
              () => {
                setEditing(null);
                setEditError(null);
                lists.reload();
              },
              (e) => setEditError(describe(e)),
            )
          }
        >
          <label>
            Why it is allowlisted (empty: no comment)
            <input name="edit-comment" maxLength={200} value={editText} onInput={(e) => setEditText(e.currentTarget.value)} />
          </label>
        </Dialog>
      )}
      {removing && (
        <Dialog
          title={`Remove ${removing.network}`}
          submitLabel="Remove"
          danger
          error={removeError}
          onClose={() => {
            setRemoving(null);
            setRemoveError(null);
          }}
          onSubmit={() =>
            del(withQuery("/api/v1/allowlists", { network: removing.network, group: removing.group })).then(
              () => {
                setRemoving(null);
                setRemoveError(null);
                lists.reload();
              },
              (e) => setRemoveError(describe(e)),
            )
          }
        >
          <p>
            {removing.network} can be banned again {removing.group === null ? "anywhere in the fleet" : `on group ${removing.group}'s agents`}.
          </p>
        </Dialog>
      )}
    </section>
  );
}
