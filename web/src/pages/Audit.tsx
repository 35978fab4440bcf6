// The audit log: every change with its actor, newest first, filtered by
// actor and action, paged on the server.

import { useState } from "preact/hooks";
import { get } from "../api";
import { Pager, useCursors } from "../components/Pager";
import { ErrorNote } from "../components/Status";
import { time } from "../format";
import { useLoad } from "../hooks";
import type { AuditEntry, Page } from "../types";

export function Audit() {
  const [draft, setDraft] = useState({ actor: "", action: "" });
  const [filters, setFilters] = useState(draft);
  const cursors = useCursors();
  const page = useLoad(
    () => get<Page<AuditEntry>>("/api/v1/audit", { actor: filters.actor.trim(), action: filters.action.trim(), limit: 50, cursor: cursors.cursor }),
    [filters, cursors.cursor],
  );
  return (
    <section>
      <h1>Audit log</h1>
      <form
        class="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          cursors.reset();
          setFilters({ ...draft });
        }}
      >
        <label>
          Actor
          <input name="actor" value={draft.actor} onInput={(e) => setDraft({ ...draft, actor: e.currentTarget.value })} placeholder="user:alice" />
        </label>
        <label>
          Action
          <input name="action" value={draft.action} onInput={(e) => setDraft({ ...draft, action: e.currentTarget.value })} placeholder="decision.revoke" />
        </label>
        <button type="submit" class="primary">
          Filter
        </button>
      </form>
      <ErrorNote error={page.error} />
      <div class="table-wrap">
        <table data-testid="audit">
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Detail</th>
              <th scope="col">From</th>
            </tr>
          </thead>
          <tbody>
            {(page.data?.items ?? []).map((a) => (
              <tr key={a.id}>
                <td>{time(a.at)}</td>
                <td>{a.actor}</td>
                <td>{a.action}</td>
                <td>{a.target}</td>
                <td>
                  <code class="small">{a.detail && Object.keys(a.detail as object).length ? JSON.stringify(a.detail) : ""}</code>
                </td>
                <td>{a.source ?? ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <Pager page={cursors.page} hasPrev={cursors.page > 1} nextCursor={page.data?.next_cursor ?? null} onPrev={cursors.prev} onNext={cursors.next} />
    </section>
  );
}
