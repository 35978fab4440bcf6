// Decisions: every ban and revocation, searched by IP or CIDR, filtered,
// sorted and paged on the server (cursor pagination stays fast over
// millions of rows). Operators ban, revoke, act on many at once and export.

import { useEffect, useState } from "preact/hooks";
import { get, post, request } from "../api";
import { useCan } from "../auth";
import { Dialog } from "../components/Dialog";
import { Pager, useCursors } from "../components/Pager";
import { Badge, describe, ErrorNote } from "../components/Status";
import { ago, time, until } from "../format";
import { useLoad } from "../hooks";
import { useLiveReload } from "../live";
import { onLink } from "../router";
import type { Decision, Page } from "../types";

interface Filters {
  ip: string;
  status: string;
  origin: string;
  jail: string;
  agent: string;
  scope: string;
  sort: string;
  limit: string;
}

const ORIGINS = ["local", "fleet", "recidive", "subnet", "manual", "feed"];

function initial(): Filters {
  const q = new URLSearchParams(location.search);
  return {
    ip: q.get("ip") ?? "",
    status: q.get("status") ?? "",
    origin: q.get("origin") ?? "",
    jail: q.get("jail") ?? "",
    agent: q.get("agent") ?? "",
    scope: q.get("scope") ?? "",
    sort: q.get("sort") ?? "newest",
    limit: q.get("limit") ?? "50",
  };
}

function query(f: Filters) {
  return { ip: f.ip.trim(), status: f.status, origin: f.origin, jail: f.jail.trim(), agent: f.agent.trim(), scope: f.scope.trim(), sort: f.sort };
}

async function download(format: "text" | "csv", f: Filters) {
  const res = await request("GET", "/api/v1/decisions/export", undefined, { ...query(f), sort: undefined, format });
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = format === "csv" ? "fleetban-decisions.csv" : "fleetban-blocklist.txt";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

type Open = { kind: "ban" } | { kind: "revoke"; ids: number[]; label: string } | null;

export function Decisions() {
  const canWrite = useCan("decisions:write");
  const [draft, setDraft] = useState<Filters>(initial);
  const [filters, setFilters] = useState<Filters>(initial);
  const cursors = useCursors();
  const [selected, setSelected] = useState<Set<number>>(new Set());
  const [open, setOpen] = useState<Open>(null);
  const [exportError, setExportError] = useState<unknown>(null);

  const page = useLoad(
    () => get<Page<Decision>>("/api/v1/decisions", { ...query(filters), limit: filters.limit, cursor: cursors.cursor }),
    [filters, cursors.cursor],
  );
  useEffect(() => setSelected(new Set()), [filters, cursors.cursor]);
  // New decisions show up on the first page without a reload.
  useLiveReload(page.reload, (m) => m.type === "decision" && cursors.page === 1);

  const apply = (e: Event) => {
    e.preventDefault();
    cursors.reset();
    setFilters({ ...draft });
    const params = new URLSearchParams(Object.entries(draft).filter(([k, v]) => v && !(k === "sort" && v === "newest") && !(k === "limit" && v === "50")));
    history.replaceState(null, "", params.size ? `/decisions?${params}` : "/decisions");
  };
  const set = (k: keyof Filters) => (e: Event) => setDraft({ ...draft, [k]: (e.currentTarget as HTMLInputElement).value });
  const items = page.data?.items ?? [];
  const activeIds = items.filter((d) => d.status === "active").map((d) => d.id);
  const toggle = (id: number) => {
    const s = new Set(selected);
    if (s.has(id)) s.delete(id);
    else s.add(id);
    setSelected(s);
  };
  const done = () => {
    setOpen(null);
    setSelected(new Set());
    page.reload();
  };

  return (
    <section>
      <h1>Decisions</h1>
      <form class="filters" onSubmit={apply} role="search" aria-label="Search decisions">
        <label>
          IP or CIDR
          <input name="ip" value={draft.ip} onInput={set("ip")} placeholder="192.0.2.1 or 2001:db8::/64" />
        </label>
        <label>
          Status
          <select name="status" value={draft.status} onChange={set("status")}>
            <option value="">any</option>
            <option value="active">active</option>
            <option value="expired">expired</option>
            <option value="revoked">revoked</option>
          </select>
        </label>
        <label>
          Origin
          <select name="origin" value={draft.origin} onChange={set("origin")}>
            <option value="">any</option>
            {ORIGINS.map((o) => (
              <option key={o} value={o}>
                {o}
              </option>
            ))}
          </select>
        </label>
        <label>
          Jail
          <input name="jail" value={draft.jail} onInput={set("jail")} size={8} />
        </label>
        <label>
          Agent
          <input name="agent" value={draft.agent} onInput={set("agent")} size={10} />
        </label>
        <label>
          Scope
          <input name="scope" value={draft.scope} onInput={set("scope")} placeholder="fleet or group:web" size={10} />
        </label>
        <label>
          Sort
          <select name="sort" value={draft.sort} onChange={set("sort")}>
            <option value="newest">newest first</option>
            <option value="oldest">oldest first</option>
          </select>
        </label>
        <label>
          Per page
          <select name="limit" value={draft.limit} onChange={set("limit")}>
            {["25", "50", "100", "500"].map((n) => (
              <option key={n}>{n}</option>
            ))}
          </select>
        </label>
        <button type="submit" class="primary">
          Search
        </button>
      </form>
      <div class="toolbar">
        {canWrite && (
          <>
            <button type="button" class="primary" onClick={() => setOpen({ kind: "ban" })}>
              Ban…
            </button>
            <button
              type="button"
              class="danger"
              disabled={selected.size === 0}
              onClick={() => setOpen({ kind: "revoke", ids: [...selected], label: `${selected.size} selected decisions` })}
            >
              Revoke selected ({selected.size})
            </button>
          </>
        )}
        <button type="button" onClick={() => download("text", filters).catch(setExportError)}>
          Export block list
        </button>
        <button type="button" onClick={() => download("csv", filters).catch(setExportError)}>
          Export CSV
        </button>
        <span class="muted" aria-live="polite">
          {page.loading ? "Loading…" : `${items.length} shown`}
        </span>
      </div>
      <ErrorNote error={page.error || exportError} />
      <div class="table-wrap">
        <table data-testid="decisions">
          <thead>
            <tr>
              {canWrite && (
                <th scope="col">
                  <input
                    type="checkbox"
                    aria-label="Select every active decision on this page"
                    checked={activeIds.length > 0 && activeIds.every((id) => selected.has(id))}
                    onChange={(e) => setSelected(e.currentTarget.checked ? new Set(activeIds) : new Set())}
                  />
                </th>
              )}
              <th scope="col">Target</th>
              <th scope="col">Status</th>
              <th scope="col">Origin</th>
              <th scope="col">Jail</th>
              <th scope="col">Scope</th>
              <th scope="col">Reason</th>
              <th scope="col">By</th>
              <th scope="col">Created</th>
              <th scope="col">Expires</th>
              {canWrite && <th scope="col">Actions</th>}
            </tr>
          </thead>
          <tbody>
            {items.map((d) => (
              <tr key={d.id} data-target={d.target}>
                {canWrite && (
                  <td>
                    {d.status === "active" && (
                      <input type="checkbox" aria-label={`Select ${d.target}`} checked={selected.has(d.id)} onChange={() => toggle(d.id)} />
                    )}
                  </td>
                )}
                <td>
                  <a href={`/ips/${encodeURIComponent(d.target.split("/")[0])}`} onClick={onLink}>
                    {d.target}
                  </a>
                  {d.ports && <div class="muted small">only {d.ports}</div>}
                </td>
                <td>
                  <Badge value={d.status} />
                  {d.revoked && <div class="muted small">by {d.revoked.by}{d.revoked.reason ? `: ${d.revoked.reason}` : ""}</div>}
                </td>
                <td>{d.origin}</td>
                <td>{d.jail || "—"}</td>
                <td>{d.scope}</td>
                <td>{d.reason}</td>
                <td>{d.creator}</td>
                <td title={time(d.created_at)}>{ago(d.created_at)}</td>
                <td title={time(d.expires_at)}>{d.status === "active" ? until(d.expires_at) : "—"}</td>
                {canWrite && (
                  <td>
                    {d.status === "active" && (
                      <button type="button" class="danger small" onClick={() => setOpen({ kind: "revoke", ids: [d.id], label: d.target })}>
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
      {!page.loading && items.length === 0 && <p class="muted">No decision matches.</p>}
      <Pager page={cursors.page} hasPrev={cursors.page > 1} nextCursor={page.data?.next_cursor ?? null} onPrev={cursors.prev} onNext={cursors.next} />
      {open?.kind === "ban" && <BanDialog onClose={() => setOpen(null)} onDone={done} />}
      {open?.kind === "revoke" && <RevokeDialog ids={open.ids} label={open.label} onClose={() => setOpen(null)} onDone={done} />}
    </section>
  );
}

function BanDialog({ onClose, onDone }: { onClose: () => void; onDone: () => void }) {
  const [targets, setTargets] = useState("");
  const [reason, setReason] = useState("");
  const [duration, setDuration] = useState("4h");
  const [custom, setCustom] = useState("");
  const [scope, setScope] = useState("fleet");
  const [group, setGroup] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async () => {
    const list = targets.split(/[\s,]+/).filter(Boolean);
    if (list.length === 0) return setError("Enter at least one address or prefix.");
    if (scope === "group" && !group.trim()) return setError("Enter the group's name, or choose the whole fleet.");
    const ban = (target: string) => ({
      target,
      reason: reason.trim() || "banned from the console",
      duration: duration === "custom" ? custom.trim() : duration,
      ...(scope === "group" ? { group: group.trim() } : {}),
    });
    setBusy(true);
    setError(null);
    try {
      if (list.length === 1) await post("/api/v1/decisions", ban(list[0]));
      else await post("/api/v1/decisions/bulk", { create: list.map(ban), revoke: [] });
      onDone();
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title="Ban" submitLabel="Ban" onClose={onClose} onSubmit={submit} busy={busy} error={error}>
      <label>
        Addresses or prefixes (one per line for several)
        <textarea name="targets" rows={3} required value={targets} onInput={(e) => setTargets(e.currentTarget.value)} placeholder="192.0.2.7" />
      </label>
      <label>
        Reason
        <input name="reason" value={reason} onInput={(e) => setReason(e.currentTarget.value)} placeholder="brute force on the VPN" />
      </label>
      <label>
        Duration
        <select name="duration" value={duration} onChange={(e) => setDuration(e.currentTarget.value)}>
          {["1h", "4h", "24h", "7d", "30d", "permanent"].map((d) => (
            <option key={d}>{d}</option>
          ))}
          <option value="custom">other…</option>
        </select>
      </label>
      {duration === "custom" && (
        <label>
          Other duration
          <input name="custom-duration" required value={custom} onInput={(e) => setCustom(e.currentTarget.value)} placeholder="90m, 3d, 2w" />
        </label>
      )}
      <fieldset>
        <legend>Scope</legend>
        <label class="inline">
          <input type="radio" name="scope" value="fleet" checked={scope === "fleet"} onChange={() => setScope("fleet")} /> the whole fleet
        </label>
        <label class="inline">
          <input type="radio" name="scope" value="group" checked={scope === "group"} onChange={() => setScope("group")} /> one group
        </label>
        {scope === "group" && <input name="group" aria-label="Group" value={group} onInput={(e) => setGroup(e.currentTarget.value)} placeholder="web" />}
      </fieldset>
    </Dialog>
  );
}

function RevokeDialog({ ids, label, onClose, onDone }: { ids: number[]; label: string; onClose: () => void; onDone: () => void }) {
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async () => {
    setBusy(true);
    setError(null);
    const r = reason.trim() || "revoked from the console";
    try {
      if (ids.length === 1) await post(`/api/v1/decisions/${ids[0]}/revoke`, { reason: r });
      else await post("/api/v1/decisions/bulk", { create: [], revoke: ids.map((id) => ({ id, reason: r })) });
      onDone();
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title={`Revoke ${label}`} submitLabel="Revoke" danger onClose={onClose} onSubmit={submit} busy={busy} error={error}>
      <p>The ban ends on every agent at once. The decision stays in the history.</p>
      <label>
        Reason
        <input name="reason" value={reason} onInput={(e) => setReason(e.currentTarget.value)} placeholder="false positive" />
      </label>
    </Dialog>
  );
}
