// The console's entry: sign-in, the navigation and the routes (the part of the URL after `#`,
// so every page has an address while the server serves one document).

import { current, onSessionChange, signInOperator, signInSource, signOut, takeSignOutReason } from "./api.js";
import { destinationPage, lookupPage } from "./destinations.js";
import { logPage, searchPage } from "./logs.js";
import { field, h, notice, show } from "./ui.js";

const main = document.getElementById("main");
let stopPage = () => {};

/** The page for `hash` ("#/logs?status=failed", "#/logs/<id>"); returns its stop function. */
function route(hash) {
  const [path, search] = hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(search ?? "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "logs" && parts[1]) return logPage(main, decodeURIComponent(parts[1]));
  if (parts[0] === "destinations" && parts[1]) return destinationPage(main, decodeURIComponent(parts[1]));
  if (parts[0] === "destinations") return lookupPage(main);
  return searchPage(main, params);
}

function render() {
  stopPage();
  stopPage = () => {};
  const session = current();
  document.getElementById("nav").hidden = !session;
  document.getElementById("who").hidden = !session;
  if (!session) {
    signInPage();
    return;
  }
  document.getElementById("who-label").textContent = session.label;
  const section = location.hash.replace(/^#\/?/, "").split(/[/?]/)[0] || "logs";
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  stopPage = route(location.hash || "#/logs") ?? (() => {});
  main.focus({ preventScroll: true });
}

function signInPage() {
  const reason = takeSignOutReason();
  const outcome = h("div", { class: "outcome", "aria-live": "assertive" });
  const failed = (error) => show(outcome, notice("error", error.message));

  const operatorForm = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "operator-heading",
      onsubmit: async (event) => {
        event.preventDefault();
        const token = new FormData(operatorForm).get("token").toString().trim();
        await signInOperator(token).catch(failed);
      },
    },
    h("h2", { id: "operator-heading" }, "Operator"),
    field("Operator token", h("input", { name: "token", type: "password", required: true, autocomplete: "off" }), "The admin token ingress is configured with."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in as operator")),
  );

  const sourceForm = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "source-heading",
      onsubmit: async (event) => {
        event.preventDefault();
        const data = new FormData(sourceForm);
        await signInSource(data.get("client_id").toString().trim(), data.get("client_secret").toString()).catch(failed);
      },
    },
    h("h2", { id: "source-heading" }, "Source"),
    field("Client ID", h("input", { name: "client_id", required: true, autocomplete: "username", spellcheck: "false" })),
    field("Client secret", h("input", { name: "client_secret", type: "password", required: true, autocomplete: "current-password" }), "Exchanged for a short-lived token; a source sees only its organization."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in as source")),
  );

  show(
    main,
    h("h1", {}, "Sign in"),
    reason ? notice("info", reason) : null,
    outcome,
    h("div", { class: "cards" }, operatorForm, sourceForm),
    h("p", { class: "muted" }, "The token is kept in this page's memory only: reloading the page signs you out."),
  );
}

document.getElementById("sign-out").addEventListener("click", () => signOut());
onSessionChange(render);
window.addEventListener("hashchange", render);
render();
