// Who is signed in and what they may do: the scopes from /auth/me shape
// the UI (a viewer sees no write buttons; the API refuses anyway).

import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { Me } from "./types";

export const MeContext = createContext<Me | null>(null);

export function useMe(): Me | null {
  return useContext(MeContext);
}

export function useCan(scope: string): boolean {
  const me = useMe();
  return !!me && me.scopes.includes(scope);
}

export function isAdmin(me: Me | null): boolean {
  return me?.role === "admin";
}
