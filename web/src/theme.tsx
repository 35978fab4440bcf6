// Light and dark themes: follows the system unless the user picks one,
// which is remembered in this browser.

import { useState } from "preact/hooks";

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
  const change = () => {
    const next = NEXT[stored()];
    apply(next);
    if (next === "auto") localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, next);
    setChoice(next);
  };
  return (
    <button type="button" onClick={change} aria-label={`Theme: ${choice}. Change theme`}>
      {choice === "dark" ? "☾ Dark" : choice === "light" ? "☀ Light" : "◐ Auto"}
    </button>
  );
}
