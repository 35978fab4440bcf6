// Server-side cursor pagination: the API gives a cursor for the next page;
// the pages already seen are kept so "Previous" goes back.

import { useState } from "preact/hooks";

export interface Cursors {
  current: string | null;
  stack: (string | null)[];
}

export function useCursors() {
  const [c, set] = useState<Cursors>({ current: null, stack: [] });
  return {
    cursor: c.current,
    page: c.stack.length + 1,
    next: (cursor: string) => set({ current: cursor, stack: [...c.stack, c.current] }),
    prev: () => set({ current: c.stack[c.stack.length - 1] ?? null, stack: c.stack.slice(0, -1) }),
    reset: () => set({ current: null, stack: [] }),
  };
}

export function Pager(props: { page: number; hasPrev: boolean; nextCursor: string | null; onPrev: () => void; onNext: (c: string) => void }) {
  return (
    <nav class="pager" aria-label="Pages">
      <button type="button" disabled={!props.hasPrev} onClick={props.onPrev}>
        ← Previous
      </button>
      <span>Page {props.page}</span>
      <button type="button" disabled={!props.nextCursor} onClick={() => props.nextCursor && props.onNext(props.nextCursor)}>
        Next →
      </button>
    </nav>
  );
}
