/**
 * The keyboard, beside Tab and Enter on the page's own links and buttons: "/" finds an
 * action or model by id; "j" and "k" move down and up a table's rows (Enter opens the row);
 * "g" then "a", "m", "p" or "s" goes to actions, models, plugins or servers; "?" lists them.
 * Keys typed into a field are the field's.
 */

/** The pages, as the header links them: "g" then a page's first letter goes there. */
export const PAGES = [
  ["#/", "actions"],
  ["#/models", "models"],
  ["#/plugins", "plugins"],
  ["#/servers", "servers"],
] as const;

const GO: Record<string, string> = Object.fromEntries(PAGES.map(([href, name]) => [name[0], href]));

export const SHORTCUTS: [string, string][] = [
  ["/", "find an action or a model by its id"],
  ["j / k", "the next / previous row of the table; Enter opens it"],
  ...PAGES.map(([, name]): [string, string] => [`g ${name[0]}`, name]),
  ["?", "this list"],
  ["Esc", "close this list, or a question"],
];

/** Listens until the returned function is called; `help` toggles the list of shortcuts. */
export function listenToKeys(help: (show?: boolean) => void): () => void {
  let go = false;
  const onKey = (event: KeyboardEvent) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    if (event.key === "Escape") return help(false);
    const target = event.target as HTMLElement;
    if (target.closest("input, select, textarea, [contenteditable]")) return;
    const key = event.key;
    if (go) {
      go = false;
      if (GO[key]) {
        event.preventDefault();
        location.hash = GO[key];
      }
      return;
    }
    if (key === "g") go = true;
    else if (key === "?") help();
    else if (key === "/") {
      const search = document.querySelector<HTMLInputElement>("input[name=search]");
      if (!search) return;
      event.preventDefault();
      search.focus();
    } else if (key === "j" || key === "k") {
      event.preventDefault();
      moveRow(key === "j" ? 1 : -1);
    }
  };
  addEventListener("keydown", onKey);
  return () => removeEventListener("keydown", onKey);
}

/**
 * Focuses the first link of the row `by` rows from the focused one, in the table it is in or
 * the page's first. A focused row scrolled out of view is brought back first: a windowed
 * table renders the rows next to it only once it is near the window again.
 */
function moveRow(by: number): void {
  const current = document.activeElement?.closest("tr");
  const box = current?.getBoundingClientRect();
  if (current && box && (box.bottom < 0 || box.top > innerHeight)) {
    current.scrollIntoView({ block: "center" });
    return;
  }
  const table = current?.closest("table") ?? document.querySelector("main table");
  const rows = [...(table?.querySelectorAll("tbody tr:not(.spacer)") ?? [])];
  if (rows.length === 0) return;
  const at = current ? rows.indexOf(current) : -1;
  const next = rows[Math.max(0, Math.min(rows.length - 1, at < 0 ? 0 : at + by))];
  const link = next?.querySelector<HTMLElement>("a, button");
  link?.focus();
  link?.scrollIntoView({ block: "nearest" });
}
