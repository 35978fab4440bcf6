// Re-reading data when the live stream says something changed, at most
// once per `wait` ms so a burst of bans costs one reload.

import { useEffect } from "preact/hooks";
import { subscribe, type StreamMessage } from "./stream";

export function useLiveReload(reload: () => void, accept: (m: StreamMessage) => boolean, wait = 500) {
  useEffect(() => {
    let timer: number | undefined;
    const off = subscribe((m) => {
      // After a lag or a reconnect, something may have been missed.
      const resync = m.type === "lagged" || (m.type === "status" && m.data.connected);
      if (!resync && !accept(m)) return;
      if (timer === undefined) {
        timer = window.setTimeout(() => {
          timer = undefined;
          reload();
        }, wait);
      }
    });
    return () => {
      off();
      window.clearTimeout(timer);
    };
  }, [reload]);
}
