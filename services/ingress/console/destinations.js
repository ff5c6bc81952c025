// A destination: its queue state (held or not and why, since when, depth, head log, attempts,
// next attempt, last error), pause / resume / skip, and its settings (URL, timeout,
// verification token). The queue routes and the admin API take the operator token; a source
// sees the API's refusal.

import { call } from "./api.js";
import { confirm, field, h, notice, poll, show, time } from "./ui.js";

/** The lookup page: a destination by its ID (the list comes with the API's list route). */
export function lookupPage(main) {
  const form = h(
    "form",
    {
      class: "card",
      onsubmit: (event) => {
        event.preventDefault();
        const id = new FormData(form).get("id").toString().trim();
        if (id) location.hash = `#/destinations/${encodeURIComponent(id)}`;
      },
    },
    field("Destination ID", h("input", { name: "id", required: true, spellcheck: "false", autocomplete: "off", placeholder: "UUID" })),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Open")),
  );
  show(
    main,
    h("h1", {}, "Destinations"),
    h("p", { class: "muted" }, "Open a destination by its ID, or from a log's page."),
    form,
  );
}

/** One destination's page. */
export function destinationPage(main, id) {
  const path = `/v1/destinations/${encodeURIComponent(id)}`;
  const queueBox = h("section", { "aria-label": "Queue", "aria-live": "polite" });
  const settingsBox = h("section", { "aria-label": "Settings" });
  const outcome = h("div", { class: "outcome" });
  let queue = null;

  async function loadQueue() {
    try {
      queue = await call("GET", `${path}/queue`);
      show(queueBox, queueView(queue));
    } catch (error) {
      queue = null;
      show(queueBox, notice("error", error.message));
    }
  }

  async function act(action, question, confirmLabel, describe) {
    if (!(await confirm(question, confirmLabel))) return;
    try {
      const query = action === "skip" && queue?.head_log_id ? { log_id: queue.head_log_id } : undefined;
      const answer = await call("POST", `${path}/${action}`, { query });
      show(outcome, notice("success", describe(answer)));
    } catch (error) {
      show(outcome, notice("error", error.message));
    }
    loadQueue();
  }

  function queueView(state) {
    const held = state.paused;
    const reason = state.paused_reason === "operator" ? "paused by an operator" : state.paused_reason === "failing" ? "its head is failing" : "";
    const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
    return h(
      "div",
      { class: held ? "queue held" : "queue" },
      h("h2", {}, held ? `Held: ${reason}` : "Delivering"),
      h(
        "dl",
        { class: "summary" },
        row("Held since", held ? time(state.paused_since) : "—"),
        row("Depth", String(state.depth)),
        row("Head log", state.head_log_id ? h("a", { href: `#/logs/${state.head_log_id}` }, state.head_log_id) : "—"),
        row("Head attempts", state.head_attempts ?? "—"),
        row("Next attempt", time(state.next_attempt_at)),
        row("Last error", state.last_error ? h("span", { class: "error-text" }, state.last_error) : "—"),
        row("Partition", String(state.partition)),
      ),
      h(
        "div",
        { class: "actions" },
        state.paused_reason === "operator"
          ? h("button", { type: "button", onclick: () => act("resume", `Resume destination ${id}? Its queue is delivered again, in order.`, "Resume", () => "Resumed.") }, "Resume…")
          : h("button", { type: "button", class: "secondary", onclick: () => act("pause", `Pause destination ${id}? Nothing is sent to it until it is resumed; its messages wait in order.`, "Pause", () => "Paused.") }, "Pause…"),
        state.head_log_id
          ? h(
              "button",
              {
                type: "button",
                class: "danger",
                onclick: () =>
                  act(
                    "skip",
                    `Skip log ${state.head_log_id}? It is cancelled (never delivered) and the next message in the queue goes next.`,
                    "Skip it",
                    (answer) => `Log ${answer.skipped_log_id} was cancelled.`,
                  ),
              },
              "Skip the head…",
            )
          : null,
      ),
    );
  }

  async function loadSettings() {
    try {
      show(settingsBox, settingsForm(await call("GET", path)));
    } catch (error) {
      show(settingsBox, notice("error", error.message));
    }
  }

  function settingsForm(destination) {
    const message = h("div", { class: "outcome", "aria-live": "polite" });
    const input = (name, attributes = {}) => h("input", { name, value: destination[name], autocomplete: "off", spellcheck: "false", ...attributes });
    const form = h(
      "form",
      { class: "card settings", onsubmit: (event) => save(event) },
      h("h2", {}, "Settings"),
      field("Name", input("name")),
      field("URL", input("url", { type: "url" })),
      field("Timeout (ms)", input("timeout_ms", { type: "number", min: "1", step: "1" })),
      field("Verification token", input("verification_token"), "Sent to the receiver in the verification-token header."),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Save")),
      message,
    );

    async function save(event) {
      event.preventDefault();
      for (const old of form.querySelectorAll(".field-error")) old.remove();
      for (const invalid of form.querySelectorAll("[aria-invalid]")) invalid.removeAttribute("aria-invalid");
      const data = new FormData(form);
      const changes = {};
      for (const name of ["name", "url", "verification_token"]) {
        const value = data.get(name).toString();
        if (value !== destination[name]) changes[name] = value;
      }
      const timeout = Number(data.get("timeout_ms"));
      if (timeout !== destination.timeout_ms) changes.timeout_ms = timeout;
      if (!Object.keys(changes).length) {
        show(message, notice("info", "Nothing changed."));
        return;
      }
      try {
        destination = await call("PATCH", path, { json: changes });
        show(message, notice("success", "Saved."));
      } catch (error) {
        show(message, notice("error", error.message));
        showBesideField(form, error.message);
      }
    }
    return form;
  }

  show(
    main,
    h("p", {}, h("a", { href: "#/destinations" }, "← Destinations")),
    h("h1", {}, "Destination ", h("code", {}, id)),
    h("p", {}, h("a", { href: `#/logs?destination_id=${encodeURIComponent(id)}` }, "Its logs")),
    outcome,
    queueBox,
    settingsBox,
  );
  loadQueue();
  loadSettings();
  return poll(loadQueue);
}

/**
 * The API names the field it refused (`url must be ...`, `timeout_ms must be ...`): its text is
 * repeated beside that field, as well as above the form.
 */
export function showBesideField(form, text) {
  const named = [...form.elements].find((element) => element.name && new RegExp(`\\b${element.name}\\b`).test(text));
  if (!named) return;
  const hint = h("small", { class: "field-error", id: `${named.id}-error` }, text);
  named.setAttribute("aria-invalid", "true");
  named.setAttribute("aria-errormessage", hint.id);
  named.insertAdjacentElement("afterend", hint);
}
