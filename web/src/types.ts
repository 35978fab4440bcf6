// The API's resources, as documented in docs/api.md.

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface Decision {
  id: number;
  version: number;
  target: string;
  origin: string;
  reason: string;
  creator: string;
  jail: string;
  scope: string;
  /** Port scope: "tcp/22", "all/80,443"; empty: all traffic. */
  ports: string;
  created_at: string;
  expires_at: string | null;
  status: "active" | "expired" | "revoked";
  revoked: { id: number; at: string; by: string; reason: string } | null;
}

export interface Change {
  kind: "ban" | "revoke";
  id: number;
  version: number;
  target: string;
  origin: string;
  reason: string;
  creator: string;
  created_at: string;
  expires_at: string | null;
  revokes: number | null;
}

export interface FleetEvent {
  id: string;
  agent: string;
  jail: string;
  ip: string;
  user: string | null;
  occurred_at: string;
  received_at: string | null;
}

export interface Group {
  key: string;
  count: number;
  first: string;
  last: string;
}

export interface Agent {
  id: string;
  hostname: string;
  version: string;
  jails: string[];
  first_seen: string;
  last_seen: string;
  health: string;
  applied_version: number;
  lag: number;
  /** Seconds since the oldest decision it has yet to apply was made. */
  lag_seconds: number;
  group: string;
  revoked_at: string | null;
  firewall: { enforced: number; drift_total: number; backend: string } | null;
}

export interface EnrollmentToken {
  id: string;
  group: string | null;
  created_at: string;
  expires_at: string;
  max_uses: number;
  uses: number;
  revoked_at: string | null;
}

export interface CreatedEnrollmentToken {
  id: string;
  token: string;
  group: string | null;
  expires_at: string;
  max_uses: number;
  server_url: string | null;
}

export interface JailRule {
  group: string;
  jail: string;
  enabled: boolean;
  maxretry: number | null;
  findtime: string | null;
  bantime: string | null;
}

export interface Rules {
  rules: string;
  structured: Record<string, unknown>;
  policy_version: number;
}

export interface AllowlistItem {
  network: string;
  comment: string | null;
}

export interface Allowlists {
  global: AllowlistItem[];
  groups: Record<string, AllowlistItem[]>;
  policy_version: number;
}

export interface Feed {
  name: string;
  source: string | null;
  interval_seconds: number | null;
  bantime_seconds: number | null;
  configured: boolean;
  added_by: string | null;
  added_at: string | null;
  status: {
    last_attempt: string;
    last_success: string | null;
    entries: number;
    invalid_lines: number;
    last_error: string | null;
  } | null;
}

export interface Stats {
  series: string;
  step_seconds: number;
  buckets: { start: string; count: number }[];
}

export interface IpReport {
  ip: string;
  banned: boolean;
  decisions: Decision[];
  events_by_agent: Group[];
  events_by_jail: Group[];
  recent_events: FleetEvent[];
}

export interface Me {
  actor: string;
  role: string | null;
  scopes: string[];
}

export interface User {
  name: string;
  role: string;
  created_at: string;
  disabled_at: string | null;
}

export interface Token {
  id: string;
  name: string;
  scopes: string[];
  created_by: string;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
}

export interface AuditEntry {
  id: number;
  at: string;
  actor: string;
  action: string;
  target: string;
  detail: unknown;
  source: string | null;
}
