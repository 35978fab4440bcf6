// The console's shell: sign-in gate, navigation, theme, live stream, and
// the page for the current address.

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { currentSession, get, logout, onSession, type Session } from "./api";
import { isAdmin, MeContext } from "./auth";
import { onLink, useLocation } from "./router";
import { isConnected, startStream, stopStream, subscribe } from "./stream";
import { Theme } from "./theme";
import type { Me } from "./types";
import { Login } from "./pages/Login";
import { Overview } from "./pages/Overview";
import { Decisions } from "./pages/Decisions";
import { IpLookup } from "./pages/IpLookup";
import { Agents } from "./pages/Agents";
import { Policies } from "./pages/Policies";
import { Allowlists } from "./pages/Allowlists";
import { Feeds } from "./pages/Feeds";
import { Users } from "./pages/Users";
import { Tokens } from "./pages/Tokens";
import { Audit } from "./pages/Audit";
import "./style.css";

interface NavItem {
  href: string;
  label: string;
  show: (me: Me) => boolean;
}

const NAV: NavItem[] = [
  { href: "/", label: "Overview", show: () => true },
  { href: "/decisions", label: "Decisions", show: (me) => me.scopes.includes("decisions:read") },
  { href: "/ips", label: "IP lookup", show: (me) => me.scopes.includes("events:read") },
  { href: "/agents", label: "Agents", show: (me) => me.scopes.includes("agents:read") },
  { href: "/policies", label: "Policies", show: (me) => me.scopes.includes("policies:read") },
  { href: "/allowlists", label: "Allowlists", show: (me) => me.scopes.includes("policies:read") },
  { href: "/feeds", label: "Feeds", show: (me) => me.scopes.includes("policies:read") },
  { href: "/users", label: "Users", show: isAdmin },
  { href: "/tokens", label: "API tokens", show: isAdmin },
  { href: "/audit", label: "Audit log", show: (me) => me.scopes.includes("audit:read") },
];

function Page({ path, me }: { path: string; me: Me }) {
  if (path === "/") return <Overview />;
  if (path === "/decisions") return <Decisions />;
  if (path === "/ips" || path.startsWith("/ips/")) return <IpLookup ip={decodeURIComponent(path.slice(5))} />;
  if (path === "/agents") return <Agents />;
  const policies = me.scopes.includes("policies:read");
  if (path === "/policies" && policies) return <Policies />;
  if (path === "/allowlists" && policies) return <Allowlists />;
  if (path === "/feeds" && policies) return <Feeds />;
  if (path === "/users" && isAdmin(me)) return <Users />;
  if (path === "/tokens" && isAdmin(me)) return <Tokens />;
  if (path === "/audit" && me.scopes.includes("audit:read")) return <Audit />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        There is no page at <code>{path}</code> for you. <a href="/" onClick={onLink}>Back to the overview</a>.
      </p>
    </section>
  );
}

function LiveIndicator() {
  const [up, setUp] = useState(isConnected());
  useEffect(() => {
    const off = subscribe((m) => m.type === "status" && setUp(m.data.connected));
    // The stream may have opened between the first render and now.
    setUp(isConnected());
    return off;
  }, []);
  return (
    <span class={`live ${up ? "on" : "off"}`} role="status" title={up ? "Live updates on" : "Live updates reconnecting"}>
      {up ? "● live" : "○ offline"}
    </span>
  );
}

function App() {
  const [session, setSession] = useState<Session | null>(currentSession());
  const [me, setMe] = useState<Me | null>(null);
  const [menu, setMenu] = useState(false);
  const { path } = useLocation();

  useEffect(() => onSession(setSession), []);
  useEffect(() => {
    if (!session) {
      setMe(null);
      stopStream();
      return;
    }
    get<Me>("/api/v1/auth/me").then(setMe, () => setMe(null));
    startStream();
  }, [session?.user]);
  useEffect(() => setMenu(false), [path]);

  if (!session) return <Login />;
  if (!me) return <p class="loading" aria-busy="true">Loading…</p>;
  return (
    <MeContext.Provider value={me}>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="/" onClick={onLink}>
          fleetban
        </a>
        <button type="button" class="menu" aria-expanded={menu} aria-controls="nav" onClick={() => setMenu(!menu)}>
          Menu
        </button>
        <nav id="nav" class={menu ? "open" : ""} aria-label="Main">
          {NAV.filter((n) => n.show(me)).map((n) => (
            <a
              key={n.href}
              href={n.href}
              onClick={onLink}
              aria-current={(n.href === "/" ? path === "/" : path.startsWith(n.href)) ? "page" : undefined}
            >
              {n.label}
            </a>
          ))}
        </nav>
        <div class="who">
          <LiveIndicator />
          <Theme />
          <span class="user" data-testid="who">
            {session.user} <small>({me.role})</small>
          </span>
          <button type="button" onClick={() => void logout()}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Page path={path} me={me} />
      </main>
    </MeContext.Provider>
  );
}

const root = document.getElementById("app");
if (root) render(<App />, root);
