// Users (admins only): who may sign in, with which role; create and disable.

import { useState } from "preact/hooks";
import { del, get, post } from "../api";
import { Dialog } from "../components/Dialog";
import { Badge, describe, ErrorNote } from "../components/Status";
import { time } from "../format";
import { useLoad } from "../hooks";
import type { User } from "../types";

export function Users() {
  const users = useLoad(() => get<User[]>("/api/v1/users"), []);
  const [creating, setCreating] = useState(false);
  const [disabling, setDisabling] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  return (
    <section>
      <h1>Users</h1>
      <p class="muted">Viewers read; operators also ban and revoke; admins also manage users, API tokens and bouncers and read the audit log.</p>
      <div class="toolbar">
        <button type="button" class="primary" onClick={() => setCreating(true)}>
          Add user…
        </button>
      </div>
      <ErrorNote error={users.error} />
      <div class="table-wrap">
        <table data-testid="users">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Role</th>
              <th scope="col">Created</th>
              <th scope="col">Status</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {(users.data ?? []).map((u) => (
              <tr key={u.name}>
                <td>{u.name}</td>
                <td>{u.role}</td>
                <td>{time(u.created_at)}</td>
                <td>{u.disabled_at ? <Badge value="disabled" /> : <Badge value="active" />}</td>
                <td>
                  {!u.disabled_at && (
                    <button type="button" class="danger small" onClick={() => setDisabling(u.name)}>
                      Disable
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {creating && (
        <CreateUser
          onClose={() => setCreating(false)}
          onDone={() => {
            setCreating(false);
            users.reload();
          }}
        />
      )}
      {disabling && (
        <Dialog
          title={`Disable ${disabling}`}
          submitLabel="Disable"
          danger
          error={error}
          onClose={() => setDisabling(null)}
          onSubmit={() =>
            del(`/api/v1/users/${encodeURIComponent(disabling)}`).then(
              () => {
                setDisabling(null);
                setError(null);
                users.reload();
              },
              (e) => setError(describe(e)),
            )
          }
        >
          <p>{disabling} can no longer sign in, and their sessions end now.</p>
        </Dialog>
      )}
    </section>
  );
}

function CreateUser({ onClose, onDone }: { onClose: () => void; onDone: () => void }) {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [role, setRole] = useState("viewer");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async () => {
    if (password.length < 12) return setError("The password needs at least 12 characters.");
    setBusy(true);
    try {
      await post("/api/v1/users", { name: name.trim(), password, role });
      onDone();
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title="Add user" submitLabel="Add" onClose={onClose} onSubmit={submit} busy={busy} error={error}>
      <label>
        Name
        <input name="name" required value={name} onInput={(e) => setName(e.currentTarget.value)} autoComplete="off" />
      </label>
      <label>
        Password (12 characters or more)
        <input name="password" type="password" required minLength={12} value={password} onInput={(e) => setPassword(e.currentTarget.value)} autoComplete="new-password" />
      </label>
      <label>
        Role
        <select name="role" value={role} onChange={(e) => setRole(e.currentTarget.value)}>
          <option>viewer</option>
          <option>operator</option>
          <option>admin</option>
        </select>
      </label>
    </Dialog>
  );
}
