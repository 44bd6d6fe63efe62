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
 * the page's first. In a windowed table (rows numbered by aria-rowindex) the next row is
 * found by its number: when it is not rendered yet (the focused row is out of the window),
 * the focused row is brought back into view first, and the next key press moves on.
 */
function moveRow(by: number): void {
  const current = document.activeElement?.closest("tr");
  const table = current?.closest("table") ?? document.querySelector("main table");
  const rows = [...(table?.querySelectorAll<HTMLElement>("tbody tr:not(.spacer)") ?? [])];
  if (rows.length === 0) return;
  const place = current?.getAttribute("aria-rowindex");
  let next: HTMLElement | undefined;
  if (current && place) {
    const wanted = Math.max(2, Number(place) + by);
    next = rows.find((row) => row.getAttribute("aria-rowindex") === String(wanted));
    if (!next && wanted <= Number(table?.getAttribute("aria-rowcount") ?? 0)) {
      current.scrollIntoView({ block: "center" });
      return;
    }
    next ??= current;
  } else {
    const at = current ? rows.indexOf(current) : -1;
    next = rows[Math.max(0, Math.min(rows.length - 1, at < 0 ? 0 : at + by))];
  }
  const link = next?.querySelector<HTMLElement>("a, button");
  link?.focus();
  link?.scrollIntoView({ block: "nearest" });
}
