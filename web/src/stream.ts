// The live stream (`/api/v1/stream`, Server-Sent Events): one connection
// for the whole app, shared by every page that listens. EventSource cannot
// send headers, so the access token goes in the query; on an error the
// stream reconnects with a fresh token.

import { accessToken } from "./api";
import type { Change, FleetEvent } from "./types";

export type StreamMessage =
  | { type: "decision"; data: Change }
  | { type: "event"; data: FleetEvent }
  | { type: "lagged"; data: unknown }
  | { type: "status"; data: { connected: boolean } };

const listeners = new Set<(m: StreamMessage) => void>();
let source: EventSource | null = null;
let retry: number | undefined;
let wanted = false;
let connected = false;

function emit(m: StreamMessage) {
  if (m.type === "status") connected = m.data.connected;
  listeners.forEach((f) => f(m));
}

/** Whether the stream is connected now (pages mounted later start from this). */
export function isConnected(): boolean {
  return connected;
}

async function connect() {
  const token = await accessToken();
  if (!wanted || !token) return;
  const es = new EventSource(`/api/v1/stream?access_token=${encodeURIComponent(token)}`);
  source = es;
  es.onopen = () => emit({ type: "status", data: { connected: true } });
  for (const type of ["decision", "event", "lagged"] as const) {
    es.addEventListener(type, (e) => {
      try {
        emit({ type, data: JSON.parse((e as MessageEvent).data) } as StreamMessage);
      } catch {
        // A message that is not JSON: ignore it, the next one may be fine.
      }
    });
  }
  es.onerror = () => {
    es.close();
    if (source === es) source = null;
    emit({ type: "status", data: { connected: false } });
    if (wanted) retry = window.setTimeout(connect, 2000);
  };
}

export function startStream() {
  if (wanted) return;
  wanted = true;
  void connect();
}

export function stopStream() {
  wanted = false;
  window.clearTimeout(retry);
  source?.close();
  source = null;
  if (connected) emit({ type: "status", data: { connected: false } });
}

export function subscribe(f: (m: StreamMessage) => void): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}
