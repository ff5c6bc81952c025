// Small DOM helpers. Text is always set as text (never parsed as HTML): a log's fields and a
// receiver's response excerpt come from outside and are shown as they are.

/**
 * Builds an element: `h("a", { href: "#/logs", class: "x" }, "text", child)`. Attributes starting
 * with "on" are event listeners; `null`, `undefined` and `false` attributes and children are
 * left out.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces what `element` shows. */
export function show(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

/**
 * A time in the viewer's own zone, with the UTC value on hover (and in `datetime`). Empty for a
 * missing time.
 */
export function time(value) {
  if (!value) return h("span", { class: "muted" }, "—");
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return h("span", {}, value);
  const local = date.toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
  return h("time", { datetime: date.toISOString(), title: `${date.toISOString().replace(".000Z", "Z")} (UTC)` }, local);
}

/** A status as a coloured badge. */
export function badge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

/** A message for the page: `kind` is "error", "success" or "info". */
export function notice(kind, text) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** A table that scrolls sideways in a narrow window instead of squeezing its columns. */
export function table(headings, rows, { caption } = {}) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, headings.map((heading) => h("th", { scope: "col" }, heading)))),
      h("tbody", {}, rows),
    ),
  );
}

/** A labelled form field; `input` is the control, its `id` is set from `name`. */
export function field(label, input, hint) {
  const id = input.id || `field-${input.name}`;
  input.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) input.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", { id: hintId }, hint) : null);
}

/** A select of `options` ([value, label] pairs) with `selected` chosen. */
export function select(name, options, selected) {
  return h(
    "select",
    { name },
    options.map(([value, label]) => h("option", { value, selected: value === (selected ?? "") }, label)),
  );
}

/**
 * Asks before an action: resolves to true when the viewer confirms. The dialog is modal and
 * keyboard-usable (Escape cancels, focus starts on Cancel).
 */
export function confirm(text, confirmLabel = "Confirm") {
  const dialog = document.getElementById("confirm");
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  document.getElementById("confirm-text").textContent = text;
  ok.textContent = confirmLabel;
  return new Promise((resolve) => {
    const finish = (answer) => {
      ok.removeEventListener("click", onOk);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onOk = () => finish(true);
    const onCancel = (event) => {
      event.preventDefault();
      finish(false);
    };
    ok.addEventListener("click", onOk);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    cancel.focus();
  });
}

/** True while a confirmation is open: polling waits, so the page does not move under it. */
function busy() {
  return document.getElementById("confirm").open;
}

/** How often an open page asks again (ms). */
const POLL_MS = 4000;

/**
 * Calls `refresh` every few seconds while the page is visible and no confirmation is open;
 * returns the function that stops it.
 */
export function poll(refresh) {
  const timer = setInterval(() => {
    if (document.visibilityState === "visible" && !busy()) refresh();
  }, POLL_MS);
  return () => clearInterval(timer);
}
