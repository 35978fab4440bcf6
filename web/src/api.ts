// The REST API client: the console's only way to the server. Adds the
// access token, refreshes it once when it has expired, and turns every
// error into an ApiError with the API's stable code.

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public retryAfter?: number,
  ) {
    super(message);
  }
}

export interface Session {
  access_token: string;
  expires_at: string;
  refresh_token: string;
  refresh_expires_at: string;
  user: string;
  role: string;
}

const KEY = "fleetban.session";
let session: Session | null = load();
const listeners = new Set<(s: Session | null) => void>();

function load(): Session | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

export function currentSession(): Session | null {
  return session;
}

export function setSession(s: Session | null) {
  session = s;
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
  listeners.forEach((f) => f(s));
}

export function onSession(f: (s: Session | null) => void): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}

type Query = Record<string, string | number | undefined | null | false>;

export function withQuery(path: string, query?: Query): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v !== undefined && v !== null && v !== "" && v !== false) params.set(k, String(v));
  }
  const q = params.toString();
  return q ? `${path}?${q}` : path;
}

async function toError(res: Response): Promise<ApiError> {
  let code = "http_" + res.status;
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body?.error?.code) {
      code = body.error.code;
      message = body.error.message;
    }
  } catch {
    // Not the API's error shape (a proxy, a network failure): keep the status.
  }
  const retry = Number(res.headers.get("Retry-After"));
  return new ApiError(res.status, code, message, Number.isFinite(retry) && retry > 0 ? retry : undefined);
}

let refreshing: Promise<boolean> | null = null;

/** Exchanges the refresh token for a new pair; false when the session is over. */
function refresh(): Promise<boolean> {
  if (!refreshing) {
    refreshing = (async () => {
      const s = session;
      if (!s) return false;
      const res = await fetch("/api/v1/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: s.refresh_token }),
      });
      if (!res.ok) {
        setSession(null);
        return false;
      }
      setSession((await res.json()) as Session);
      return true;
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** A fresh enough access token, refreshing it when it ends within 30 s. */
export async function accessToken(): Promise<string | null> {
  if (session && Date.parse(session.expires_at) - Date.now() < 30_000) await refresh();
  return session?.access_token ?? null;
}

export async function request(method: string, path: string, body?: unknown, query?: Query): Promise<Response> {
  const url = withQuery(path, query);
  const send = async () => {
    const headers: Record<string, string> = {};
    const token = await accessToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  };
  let res = await send();
  if (res.status === 401 && session) {
    const err = await toError(res.clone());
    if (err.code === "token_expired" && (await refresh())) res = await send();
    else if (err.code === "invalid_token") setSession(null);
  }
  if (!res.ok) throw await toError(res);
  return res;
}

export async function get<T>(path: string, query?: Query): Promise<T> {
  return (await request("GET", path, undefined, query)).json() as Promise<T>;
}

export async function post<T>(path: string, body: unknown): Promise<T> {
  const res = await request("POST", path, body);
  return (res.status === 204 ? undefined : await res.json()) as T;
}

export async function put<T>(path: string, body: unknown): Promise<T> {
  const res = await request("PUT", path, body);
  return (res.status === 204 ? undefined : await res.json()) as T;
}

export async function patch<T>(path: string, body: unknown): Promise<T> {
  const res = await request("PATCH", path, body);
  return (res.status === 204 ? undefined : await res.json()) as T;
}

export async function del(path: string): Promise<void> {
  await request("DELETE", path);
}

export async function login(username: string, password: string): Promise<Session> {
  const res = await fetch("/api/v1/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (!res.ok) throw await toError(res);
  const s = (await res.json()) as Session;
  setSession(s);
  return s;
}

export async function logout(): Promise<void> {
  try {
    if (session) await request("POST", "/api/v1/auth/logout", {});
  } catch {
    // The session ends here whatever the server says.
  }
  setSession(null);
}
