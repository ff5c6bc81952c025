// Logs: the search of GET /v1/logs with every filter, newest first, in cursor pages; one log
// with its attempts; manual retry of one log and bulk retry of a search.

import { ApiError, call, isOperator } from "./api.js";
import { badge, confirm, field, h, notice, poll, select, show, table, time } from "./ui.js";

/** The filters of GET /v1/logs, in the order the form shows them. */
const FILTERS = ["destination_id", "source_id", "organization_id", "status", "data_model", "test", "since", "until"];

const STATUSES = [
  ["", "Any status"],
  ["queued", "queued"],
  ["delivered", "delivered"],
  ["failed", "failed"],
  ["cancelled", "cancelled"],
];

/** Bulk retry counts the matching logs first, up to this many pages of 500. */
const COUNT_PAGES = 10;

/** "2026-12-04T10:00" (a datetime-local value, the viewer's zone) as RFC 3339 UTC. */
function toRfc3339(local) {
  if (!local) return "";
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? local : date.toISOString();
}

/** An RFC 3339 time as a datetime-local value in the viewer's zone. */
function toLocalInput(rfc3339) {
  if (!rfc3339) return "";
  const date = new Date(rfc3339);
  if (Number.isNaN(date.getTime())) return "";
  const shifted = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return shifted.toISOString().slice(0, 16);
}

/** The search page. `params` are the route's query parameters (the filters and the cursor). */
export function searchPage(main, params) {
  const filters = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) ?? ""]));
  const cursor = params.get("cursor") ?? "";
  const results = h("section", { "aria-live": "polite", "aria-label": "Logs found" });
  const outcome = h("div", { class: "outcome" });

  const input = (name, attributes = {}) => h("input", { name, value: filters[name], autocomplete: "off", ...attributes });
  const form = h(
    "form",
    { class: "filters", role: "search", onsubmit: (event) => submit(event) },
    field("Destination ID", input("destination_id", { placeholder: "UUID", spellcheck: "false" })),
    field("Source ID", input("source_id", { placeholder: "UUID", spellcheck: "false" })),
    isOperator() ? field("Organization ID", input("organization_id", { placeholder: "UUID", spellcheck: "false" })) : null,
    field("Status", select("status", STATUSES, filters.status)),
    field("Data model", input("data_model", { placeholder: "e.g. Results" })),
    field(
      "Test messages",
      select(
        "test",
        [
          ["", "Test and real"],
          ["true", "Test only"],
          ["false", "Real only"],
        ],
        filters.test,
      ),
    ),
    field("Received from", h("input", { name: "since", type: "datetime-local", step: "1", value: toLocalInput(filters.since) })),
    field("Received before", h("input", { name: "until", type: "datetime-local", step: "1", value: toLocalInput(filters.until) })),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit" }, "Search"),
      h("button", { type: "button", class: "secondary", onclick: () => (location.hash = "#/logs") }, "Clear"),
      h("button", { type: "button", class: "secondary", id: "bulk-retry", onclick: () => bulkRetry() }, "Retry matching…"),
    ),
  );

  function submit(event) {
    event.preventDefault();
    const data = new FormData(form);
    const next = new URLSearchParams();
    for (const name of FILTERS) {
      let value = (data.get(name) ?? "").toString().trim();
      if (name === "since" || name === "until") value = toRfc3339(value);
      if (value) next.set(name, value);
    }
    const hash = `#/logs${next.size ? `?${next}` : ""}`;
    if (location.hash === hash) load();
    else location.hash = hash;
  }

  const query = () => ({ ...filters, cursor, limit: 50 });

  async function load() {
    try {
      const page = await call("GET", "/v1/logs", { query: query() });
      show(results, resultsTable(page.logs), pager(page.next_cursor));
    } catch (error) {
      show(results, notice("error", error.message));
    }
  }

  function pager(nextCursor) {
    const links = [];
    if (cursor) links.push(h("a", { href: `#/logs${searchOf({ ...filters })}` }, "Newest"));
    if (nextCursor) links.push(h("a", { href: `#/logs${searchOf({ ...filters, cursor: nextCursor })}`, rel: "next" }, "Older →"));
    return links.length ? h("nav", { class: "pager", "aria-label": "Pages" }, links) : null;
  }

  async function bulkRetry() {
    const status = filters.status || "failed";
    if (status === "queued") {
      show(outcome, notice("error", "Queued logs are still being delivered and cannot be retried; choose another status."));
      return;
    }
    const matching = { ...filters, status };
    let count = 0;
    let more = false;
    try {
      let next = "";
      for (let page = 0; page < COUNT_PAGES; page += 1) {
        const answer = await call("GET", "/v1/logs", { query: { ...matching, limit: 500, cursor: next } });
        count += answer.logs.length;
        next = answer.next_cursor;
        if (!next) break;
        more = page === COUNT_PAGES - 1;
      }
    } catch (error) {
      show(outcome, notice("error", error.message));
      return;
    }
    if (count === 0) {
      show(outcome, notice("info", `No ${status} logs match this search: nothing to retry.`));
      return;
    }
    const howMany = more ? `more than ${count.toLocaleString()}` : count.toLocaleString();
    const plural = count === 1 && !more ? "log" : "logs";
    if (!(await confirm(`Retry ${howMany} ${status} ${plural} matching this search?`, "Retry"))) return;
    let retried = 0;
    const refused = [];
    try {
      let next = "";
      do {
        const answer = await call("POST", "/v1/logs/retry", { query: { ...matching, limit: 1000, cursor: next } });
        retried += answer.retried;
        refused.push(...answer.not_retried);
        next = answer.next_cursor;
      } while (next);
    } catch (error) {
      show(outcome, notice("error", `Retried ${retried} before an error: ${error.message}`));
      return;
    }
    show(
      outcome,
      notice(refused.length ? "error" : "success", `Retried ${retried} ${retried === 1 ? "log" : "logs"}; ${refused.length} not retried.`),
      refused.length ? h("ul", { class: "refused" }, refused.map((item) => h("li", {}, `${item.log_id}: ${item.error}`))) : null,
    );
    load();
  }

  show(main, h("h1", {}, "Logs"), form, outcome, results);
  load();
  return poll(() => {
    if (!cursor) load();
  });
}

function searchOf(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) search.set(key, value);
  return search.size ? `?${search}` : "";
}

function short(id) {
  return h("code", { title: id }, id.slice(0, 8));
}

function resultsTable(logs) {
  if (!logs.length) {
    return h(
      "div",
      { class: "empty" },
      h("p", {}, "No logs match this search."),
      h("p", { class: "muted" }, "A log appears here when a source sends a message to a destination it is subscribed to."),
    );
  }
  return table(
    ["Received", "Status", "Data model", "Event", "Destination", "Source", "Attempts", ""],
    logs.map((log) =>
      h(
        "tr",
        { class: log.test ? "test" : null },
        h("td", {}, time(log.received_at)),
        h("td", {}, badge(log.status), log.test ? h("span", { class: "tag" }, "test") : null),
        h("td", {}, log.data_model),
        h("td", {}, log.event_type),
        h("td", {}, short(log.destination_id)),
        h("td", {}, short(log.source_id)),
        h("td", { class: "number" }, log.attempt_count),
        h("td", {}, h("a", { href: `#/logs/${log.id}`, "data-log": log.id }, "Open")),
      ),
    ),
  );
}

/** One log with every attempt, and its retry. */
export function logPage(main, id) {
  const body = h("div", {});
  const outcome = h("div", { class: "outcome" });

  async function load() {
    try {
      const log = await call("GET", `/v1/logs/${encodeURIComponent(id)}`);
      show(body, summary(log), attemptsTable(log.attempts));
    } catch (error) {
      show(body, notice("error", error.message));
    }
  }

  async function retry() {
    if (!(await confirm(`Send log ${id} to its destination again?`, "Retry"))) return;
    try {
      const answer = await call("POST", `/v1/logs/${encodeURIComponent(id)}/retry`);
      const when = answer.attempting_now
        ? "The destination was held on this log: it is attempted now."
        : "A new attempt is queued behind the destination's earlier messages.";
      show(outcome, notice("success", `Retry accepted. ${when}`));
    } catch (error) {
      show(outcome, notice("error", error instanceof ApiError ? error.message : String(error)));
    }
    load();
  }

  show(
    main,
    h("p", {}, h("a", { href: "#/logs" }, "← Logs")),
    h("h1", {}, "Log ", h("code", {}, id)),
    h("div", { class: "actions" }, h("button", { type: "button", id: "retry-log", onclick: retry }, "Retry…")),
    outcome,
    body,
  );
  load();
  return poll(load);
}

function summary(log) {
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  return h(
    "dl",
    { class: "summary" },
    row("Status", badge(log.status)),
    row("Message", h("code", {}, log.message_id)),
    row("Destination", h("a", { href: `#/destinations/${log.destination_id}` }, h("code", {}, log.destination_id))),
    row("Source", h("code", {}, log.source_id)),
    row("Organization", h("code", {}, log.organization_id)),
    row("Data model / event", `${log.data_model} / ${log.event_type}`),
    row("Environment", `${log.environment}${log.test ? " (test message)" : ""}`),
    row("Received", time(log.received_at)),
    row("Updated", time(log.updated_at)),
    row("Attempts", String(log.attempt_count)),
  );
}

function attemptsTable(attempts) {
  if (!attempts.length) return h("p", { class: "empty" }, "No attempt yet: the message waits in its destination's queue.");
  return table(
    ["#", "Started", "Duration", "Outcome", "Status code", "Error", "Response excerpt"],
    attempts.map((attempt) =>
      h(
        "tr",
        { class: "attempt" },
        h("td", { class: "number" }, attempt.number),
        h("td", {}, time(attempt.started_at)),
        h("td", { class: "number" }, `${attempt.duration_ms} ms`),
        h("td", {}, badge(attempt.outcome)),
        h("td", { class: "number" }, attempt.status_code ?? "—"),
        h("td", {}, attempt.error ?? ""),
        h("td", {}, attempt.response_excerpt ? h("pre", {}, attempt.response_excerpt) : ""),
      ),
    ),
    { caption: "Attempts" },
  );
}
