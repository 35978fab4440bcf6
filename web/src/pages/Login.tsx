// Sign in: a user name and password for a session; refused sign-ins say
// why in words (wrong credentials, throttled, server unreachable).

import { useState } from "preact/hooks";
import { ApiError, login } from "../api";
import { Theme } from "../theme";

export function message(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.code === "bad_credentials") return "Wrong user name or password.";
    if (e.code === "throttled") {
      const min = e.retryAfter ? Math.ceil(e.retryAfter / 60) : 15;
      return `Too many failed sign-ins. Try again in ${min} minute${min === 1 ? "" : "s"}.`;
    }
    if (e.code === "invalid_body") return "Enter a user name and a password.";
    return `The server refused the sign-in: ${e.message}`;
  }
  return "The server cannot be reached. Check that fleetban-server is running.";
}

export function Login() {
  const [username, setUser] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await login(username.trim(), password);
    } catch (err) {
      setError(message(err));
      setPassword("");
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <form onSubmit={submit} aria-labelledby="login-title">
        <h1 id="login-title">fleetban</h1>
        <p class="muted">Sign in to the fleet console.</p>
        <label>
          User name
          <input name="username" autoComplete="username" required value={username} onInput={(e) => setUser(e.currentTarget.value)} autoFocus />
        </label>
        <label>
          Password
          <input name="password" type="password" autoComplete="current-password" required value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
        </label>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        <div class="login-theme">
          <Theme />
        </div>
      </form>
    </main>
  );
}
