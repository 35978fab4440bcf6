// Re-reading data when the live stream says something changed, at most
// once per `wait` ms so a burst of bans costs one reload.

import { useEffect, useRef } from "preact/hooks";
import { subscribe, type StreamMessage } from "./stream";

export function useLiveReload(reload: () => void, accept: (m: StreamMessage) => boolean, wait = 500) {
  // The latest callbacks, so re-renders neither resubscribe nor cancel a
  // pending reload.
  const latest = useRef({ reload, accept });
  latest.current = { reload, accept };
  useEffect(() => {
    let timer: number | undefined;
    const off = subscribe((m) => {
      // After a lag or a reconnect, something may have been missed.
      const resync = m.type === "lagged" || (m.type === "status" && m.data.connected);
      if (!resync && !latest.current.accept(m)) return;
      if (timer === undefined) {
        timer = window.setTimeout(() => {
          timer = undefined;
          latest.current.reload();
        }, wait);
      }
    });
    return () => {
      off();
      window.clearTimeout(timer);
    };
  }, [wait]);
}
