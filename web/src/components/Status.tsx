// Small shared bits: loading and error notes, status badges.

import { ApiError } from "../api";

export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  const text = error instanceof ApiError ? `${error.message} (${error.code})` : String(error);
  return (
    <p class="error" role="alert">
      {text}
    </p>
  );
}

export function Badge({ value }: { value: string }) {
  return <span class={`badge badge-${value.replace(/[^a-z]/g, "")}`}>{value}</span>;
}

export function describe(e: unknown): string {
  return e instanceof ApiError ? e.message : String(e);
}
