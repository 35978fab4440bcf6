// Light and dark themes: follows the system unless the user picks one,
// which is remembered in this browser.

import { useEffect, useState } from "preact/hooks";

type Choice = "auto" | "light" | "dark";
const KEY = "fleetban.theme";
const NEXT: Record<Choice, Choice> = { auto: "light", light: "dark", dark: "auto" };

function stored(): Choice {
  const v = localStorage.getItem(KEY);
  return v === "light" || v === "dark" ? v : "auto";
}

function apply(c: Choice) {
  if (c === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = c;
}

apply(stored());

export function Theme() {
  const [choice, setChoice] = useState<Choice>(stored());
  useEffect(() => {
    apply(choice);
    if (choice === "auto") localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, choice);
  }, [choice]);
  return (
    <button type="button" onClick={() => setChoice(NEXT[choice])} aria-label={`Theme: ${choice}. Change theme`}>
      {choice === "dark" ? "☾ Dark" : choice === "light" ? "☀ Light" : "◐ Auto"}
    </button>
  );
}
