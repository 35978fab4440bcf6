// Loading data from the API into a component.

import { useCallback, useEffect, useRef, useState } from "preact/hooks";

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` now and whenever `deps` change; a newer run wins over an older one. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, set] = useState<{ data?: T; error: unknown; loading: boolean }>({ error: null, loading: true });
  const run = useRef(0);
  const reload = useCallback(() => {
    const n = ++run.current;
    set((s) => ({ ...s, loading: true }));
    load().then(
      (data) => n === run.current && set({ data, error: null, loading: false }),
      (error) => n === run.current && set((s) => ({ ...s, error, loading: false })),
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  useEffect(reload, [reload]);
  return { data: state.data, error: state.error, loading: state.loading, reload };
}
