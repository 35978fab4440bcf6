// Policies and jails: the jail settings pushed to each agent group
// (maxretry, findtime, bantime, enabled) and the fleet's correlation rules
// (thresholds, recidive, subnet escalation). Operators and admins edit;
// viewers read.

import { useState } from "preact/hooks";
import { del, get, put } from "../api";
import { useCan } from "../auth";
import { Dialog } from "../components/Dialog";
import { Badge, describe, ErrorNote } from "../components/Status";
import { useLoad } from "../hooks";
import type { JailRule, Rules } from "../types";
import { checkDuration, checkMaxretry, checkName } from "../validate";

function byGroup(rules: JailRule[]): [string, JailRule[]][] {
  const groups = new Map<string, JailRule[]>();
  for (const r of rules) groups.set(r.group, [...(groups.get(r.group) ?? []), r]);
  return [...groups.entries()].sort(([a], [b]) => (a === "*" ? -1 : b === "*" ? 1 : a.localeCompare(b)));
}

export function Policies() {
  const jails = useLoad(() => get<JailRule[]>("/api/v1/policies/jails"), []);
  const canWrite = useCan("policies:write");
  const [editing, setEditing] = useState<JailRule | "new" | null>(null);
  const [removing, setRemoving] = useState<JailRule | null>(null);
  const [error, setError] = useState<string | null>(null);
  return (
    <section>
      <h1>Policies and jails</h1>
      <section class="card" aria-labelledby="jails-title">
        <h2 id="jails-title">Jail rules</h2>
        <p class="muted">
          Pushed to the agents of each group at once; group <code>*</code> is every agent. An empty value keeps the agent's own setting.
        </p>
        {canWrite && (
          <div class="toolbar">
            <button type="button" class="primary" onClick={() => setEditing("new")}>
              Add jail rule…
            </button>
          </div>
        )}
        <ErrorNote error={jails.error} />
        {byGroup(jails.data ?? []).map(([group, rules]) => (
          <div class="table-wrap group-rules" key={group}>
            <table data-testid={`jails-${group}`}>
              <caption>{group === "*" ? "Every agent (*)" : `Group ${group}`}</caption>
              <thead>
                <tr>
                  <th scope="col">Jail</th>
                  <th scope="col">State</th>
                  <th scope="col">maxretry</th>
                  <th scope="col">findtime</th>
                  <th scope="col">bantime</th>
                  {canWrite && <th scope="col">Actions</th>}
                </tr>
              </thead>
              <tbody>
                {rules.map((r) => (
                  <tr key={r.jail} data-jail={`${r.group}/${r.jail}`}>
                    <td>{r.jail}</td>
                    <td>
                      <Badge value={r.enabled ? "enabled" : "disabled"} />
                    </td>
                    <td class="maxretry">{r.maxretry ?? <span class="muted">agent's</span>}</td>
                    <td>{r.findtime ?? <span class="muted">agent's</span>}</td>
                    <td>{r.bantime ?? <span class="muted">agent's</span>}</td>
                    {canWrite && (
                      <td class="actions">
                        <button type="button" class="small" aria-label={`Edit ${r.jail} for ${r.group}`} onClick={() => setEditing(r)}>
                          Edit
                        </button>{" "}
                        <button type="button" class="danger small" aria-label={`Remove ${r.jail} for ${r.group}`} onClick={() => setRemoving(r)}>
                          Remove
                        </button>
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ))}
        {!jails.loading && (jails.data ?? []).length === 0 && <p class="muted">No jail rule: every agent runs its own jail settings.</p>}
      </section>
      <CorrelationRules canWrite={canWrite} />
      {editing && (
        <EditJail
          rule={editing === "new" ? null : editing}
          onClose={() => setEditing(null)}
          onDone={() => {
            setEditing(null);
            jails.reload();
          }}
        />
      )}
      {removing && (
        <Dialog
          title={`Remove ${removing.jail} for ${removing.group}`}
          submitLabel="Remove"
          danger
          error={error}
          onClose={() => {
            setRemoving(null);
            setError(null);
          }}
          onSubmit={() =>
            del(`/api/v1/policies/jails/${encodeURIComponent(removing.group)}/${encodeURIComponent(removing.jail)}`).then(
              () => {
                setRemoving(null);
                setError(null);
                jails.reload();
              },
              (e) => setError(describe(e)),
            )
          }
        >
          <p>The group's agents go back to their own settings for this jail.</p>
        </Dialog>
      )}
    </section>
  );
}

function EditJail({ rule, onClose, onDone }: { rule: JailRule | null; onClose: () => void; onDone: () => void }) {
  const [group, setGroup] = useState(rule?.group ?? "*");
  const [jail, setJail] = useState(rule?.jail ?? "");
  const [enabled, setEnabled] = useState(rule?.enabled ?? true);
  const [maxretry, setMaxretry] = useState(rule?.maxretry == null ? "" : String(rule.maxretry));
  const [findtime, setFindtime] = useState(rule?.findtime ?? "");
  const [bantime, setBantime] = useState(rule?.bantime ?? "");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async () => {
    const g = group.trim();
    const j = jail.trim();
    const problem =
      checkName("group", g, true) ??
      checkName("jail", j) ??
      checkMaxretry(maxretry) ??
      checkDuration("findtime", findtime) ??
      checkDuration("bantime", bantime);
    if (problem) return setError(problem);
    setBusy(true);
    try {
      await put(`/api/v1/policies/jails/${encodeURIComponent(g)}/${encodeURIComponent(j)}`, {
        enabled,
        maxretry: maxretry.trim() === "" ? null : Number(maxretry.trim()),
        findtime: findtime.trim() || null,
        bantime: bantime.trim() || null,
      });
      onDone();
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title={rule ? `Edit ${rule.jail} for ${rule.group}` : "Add jail rule"} submitLabel="Save" onClose={onClose} onSubmit={submit} busy={busy} error={error}>
      <label>
        Group (* for every agent)
        <input name="group" required value={group} readOnly={!!rule} onInput={(e) => setGroup(e.currentTarget.value)} />
      </label>
      <label>
        Jail
        <input name="jail" required value={jail} readOnly={!!rule} onInput={(e) => setJail(e.currentTarget.value)} placeholder="sshd" />
      </label>
      <label class="inline">
        <input type="checkbox" name="enabled" checked={enabled} onChange={(e) => setEnabled(e.currentTarget.checked)} /> Enabled
      </label>
      <label>
        maxretry (failures that ban; empty: the agent's)
        <input name="maxretry" inputMode="numeric" value={maxretry} onInput={(e) => setMaxretry(e.currentTarget.value)} placeholder="5" />
      </label>
      <label>
        findtime (window; empty: the agent's)
        <input name="findtime" value={findtime} onInput={(e) => setFindtime(e.currentTarget.value)} placeholder="10m" />
      </label>
      <label>
        bantime (empty: the agent's)
        <input name="bantime" value={bantime} onInput={(e) => setBantime(e.currentTarget.value)} placeholder="1h" />
      </label>
    </Dialog>
  );
}

type Table = Record<string, unknown>;

function table(v: unknown): Table | null {
  return v && typeof v === "object" && !Array.isArray(v) ? (v as Table) : null;
}

function show(v: unknown): string {
  if (v === undefined || v === null) return "—";
  if (Array.isArray(v)) return v.length ? v.join(", ") : "none";
  return String(v);
}

/** The `[policy]` keys people look for, from the stored rules. */
function Summary({ structured }: { structured: Table }) {
  const p = table(structured.policy) ?? {};
  const threshold = table(p.threshold);
  const recidive = table(p.recidive);
  const subnet = table(p.subnet);
  return (
    <div class="grid rules-summary" data-testid="rules-summary">
      <div>
        <h3>Fleet threshold</h3>
        {threshold ? (
          <p>
            Ban fleet-wide when an address{" "}
            {[Number(threshold.hosts) > 0 && `fails on ${show(threshold.hosts)} hosts`, Number(threshold.failures) > 0 && `fails ${show(threshold.failures)} times`]
              .filter(Boolean)
              .join(" or ") || "fails"}{" "}
            within {show(threshold.window)}, for {show(threshold.bantime)}.
          </p>
        ) : (
          <p class="muted">Off: only local bans and manual decisions.</p>
        )}
      </div>
      <div>
        <h3>Recidive</h3>
        {recidive ? (
          <p>
            Each new ban lasts {show(recidive.factor ?? 2)}× the last{recidive.maxtime ? `, up to ${show(recidive.maxtime)}` : ""}
            {recidive.multipliers ? ` (multipliers ${show(recidive.multipliers)})` : ""}.
          </p>
        ) : (
          <p class="muted">Off: repeat offenders are banned for the same time.</p>
        )}
      </div>
      <div>
        <h3>Subnet escalation</h3>
        {subnet ? (
          <p>
            {show(subnet.min_banned)} banned addresses in one /{show(subnet.v4_prefix ?? 24)} (IPv4) or /{show(subnet.v6_prefix ?? 64)} (IPv6) within{" "}
            {show(subnet.window)} ban the prefix for {show(subnet.bantime)}.
          </p>
        ) : (
          <p class="muted">Off.</p>
        )}
      </div>
      <div>
        <h3>Scope</h3>
        <p>
          {p.group_scope ? "Decisions apply to the reporting agent's group." : "Decisions apply to the whole fleet."} Shared jails:{" "}
          {p.shared_jails === undefined ? "every jail" : show(p.shared_jails)}.
        </p>
      </div>
    </div>
  );
}

function CorrelationRules({ canWrite }: { canWrite: boolean }) {
  const rules = useLoad(() => get<Rules>("/api/v1/policies/rules"), []);
  const [text, setText] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);
  const current = text ?? rules.data?.rules ?? "";
  const save = async () => {
    setBusy(true);
    setSaved(false);
    try {
      await put<Rules>("/api/v1/policies/rules", { rules: current });
      setError(null);
      setText(null);
      setSaved(true);
      rules.reload();
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section class="card" aria-labelledby="rules-title">
      <h2 id="rules-title">Correlation rules</h2>
      <ErrorNote error={rules.error} />
      {rules.data && (
        <>
          <p class="muted">Policy version {rules.data.policy_version}. Every server replica runs them from its next correlation on.</p>
          <Summary structured={rules.data.structured} />
        </>
      )}
      <form
        class="rules-form"
        onSubmit={(e) => {
          e.preventDefault();
          void save();
        }}
      >
        <label>
          <span>
            Rules (the <code>[policy]</code> section, TOML; allowlists are edited on their own page too)
          </span>
          <textarea
            name="rules"
            rows={12}
            spellcheck={false}
            readOnly={!canWrite}
            value={current}
            onInput={(e) => {
              setText(e.currentTarget.value);
              setSaved(false);
            }}
          />
        </label>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        {saved && (
          <p class="ok" role="status">
            Saved.
          </p>
        )}
        {canWrite && (
          <div class="toolbar">
            <button type="submit" class="primary" disabled={busy || text === null}>
              Save rules
            </button>
            <button type="button" disabled={text === null} onClick={() => { setText(null); setError(null); }}>
              Discard changes
            </button>
          </div>
        )}
      </form>
    </section>
  );
}
