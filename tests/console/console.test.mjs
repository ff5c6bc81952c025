// The console in a real browser: Debian's chromium, headless, driven by playwright-core.
// Run by tests/e2e/tests/it/console.rs, which starts a stack, sends a message and passes what
// it made in the environment:
//
//   CONSOLE_URL            the console's address (http://127.0.0.1:<port>/console/)
//   ADMIN_TOKEN            the operator token
//   SOURCE_A_ID/SECRET     a source of organization A (which sent LOG_ID's message)
//   SOURCE_B_ID/SECRET     a source of organization B
//   LOG_ID, DESTINATION_ID the delivered log and its destination (organization A)
//   HELD_DESTINATION_ID    a destination of A whose receiver answers 500, held at HELD_LOG_ID
//   CHROMIUM, PLAYWRIGHT_DIR, SCREENSHOT_DIR
//
// Each step says what it checks; the first failure ends the run with a screenshot beside the
// others (failure.png) and a non-zero exit.

import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import path from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const require = createRequire(path.join(env("PLAYWRIGHT_DIR"), "package.json"));
const { chromium } = require("playwright-core");

const url = env("CONSOLE_URL");
const screenshots = env("SCREENSHOT_DIR");
const logId = env("LOG_ID");
const destinationId = env("DESTINATION_ID");
mkdirSync(screenshots, { recursive: true });

const TIMEOUT = 30_000;

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

async function step(name, run) {
  process.stdout.write(`- ${name}\n`);
  await run();
}

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, timezoneId: "America/New_York" });
context.setDefaultTimeout(TIMEOUT);
const page = await context.newPage();
const problems = [];
// Errors in the page: exceptions, CSP violations, a console file that did not load. (Chromium
// also logs every refused API call as "Failed to load resource"; the steps check those answers.)
page.on("console", (message) => {
  if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) problems.push(message.text());
});
page.on("response", (response) => {
  if (new URL(response.url()).pathname.startsWith("/console/") && response.status() >= 400) {
    problems.push(`${response.url()} answered ${response.status()}`);
  }
});
page.on("pageerror", (error) => problems.push(String(error)));

async function signOut() {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
}

async function signInAsSource(id, secret) {
  await page.getByLabel("Client ID").fill(id);
  await page.getByLabel("Client secret").fill(secret);
  await page.getByRole("button", { name: "Sign in as source" }).click();
  await page.getByRole("heading", { name: "Logs" }).waitFor();
}

/** The rows of the attempts table on a log's page. */
const attemptRows = () => page.locator("tr.attempt");

try {
  await step("the console is served with a strict Content-Security-Policy", async () => {
    const answer = await page.goto(url);
    check(answer.status() === 200, `GET ${url} answered ${answer.status()}`);
    const csp = answer.headers()["content-security-policy"] ?? "";
    for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"]) {
      check(csp.includes(directive), `CSP has ${directive}: ${csp}`);
    }
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.screenshot({ path: path.join(screenshots, "sign-in.png"), fullPage: true });
  });

  await step("a wrong operator token shows the API's own error text", async () => {
    const refused = await fetch(new URL("/v1/logs?limit=1", url), { headers: { Authorization: "Bearer not-the-token" } });
    const text = (await refused.json()).Meta.Errors[0].Text;
    await page.getByLabel("Operator token").fill("not-the-token");
    await page.getByRole("button", { name: "Sign in as operator" }).click();
    await page.getByRole("alert").filter({ hasText: text }).waitFor();
  });

  await step("the operator signs in with the keyboard alone and sees the log", async () => {
    await page.getByLabel("Operator token").fill("");
    await page.getByLabel("Operator token").focus();
    await page.keyboard.type(env("ADMIN_TOKEN"));
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Logs" }).waitFor();
    await page.locator(`a[data-log="${logId}"]`).waitFor();
    check(!page.url().includes(env("ADMIN_TOKEN")), "the token is not in the URL");
    const stored = await page.evaluate(() => localStorage.length + sessionStorage.length + document.cookie.length);
    check(stored === 0, "nothing is kept in localStorage, sessionStorage or cookies");
    await page.screenshot({ path: path.join(screenshots, "logs.png"), fullPage: true });
  });

  await step("a search by destination finds the message's log, newest first", async () => {
    await page.getByLabel("Destination ID").fill(destinationId);
    await page.getByLabel("Status").selectOption("delivered");
    await page.getByRole("button", { name: "Search" }).click();
    await page.waitForURL((address) => address.hash.includes(`destination_id=${destinationId}`));
    await page.locator(`a[data-log="${logId}"]`).waitFor();
    const rows = await page.locator("tbody tr").count();
    check(rows === 1, `one log of that destination, saw ${rows}`);
    const hover = await page.locator("tbody time").first().getAttribute("title");
    check(/Z \(UTC\)$/.test(hover ?? ""), `times show their UTC value on hover: ${hover}`);
  });

  await step("the log's page shows its attempt", async () => {
    await page.locator(`a[data-log="${logId}"]`).click();
    await page.getByRole("heading", { name: `Log ${logId}` }).waitFor();
    await attemptRows().first().waitFor();
    const count = await attemptRows().count();
    check(count === 1, `one attempt before the retry, saw ${count}`);
    const outcome = await attemptRows().first().locator(".badge").textContent();
    check(outcome === "success", `the attempt succeeded: ${outcome}`);
    const statusCode = await attemptRows().first().locator("td").nth(4).textContent();
    check(statusCode === "200", `the receiver's status code is shown: ${statusCode}`);
    await page.screenshot({ path: path.join(screenshots, "log.png"), fullPage: true });
  });

  await step("a retry, confirmed, shows the API's answer and then the new attempt", async () => {
    await page.getByRole("button", { name: "Retry…" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.waitFor();
    check((await dialog.textContent()).includes(logId), "the confirmation names the log");
    await dialog.getByRole("button", { name: "Retry" }).click();
    await page.getByRole("status").filter({ hasText: "Retry accepted" }).waitFor();
    // The page polls: the second attempt appears without a reload.
    await page.waitForFunction(() => document.querySelectorAll("tr.attempt").length === 2, null, { timeout: TIMEOUT });
    await page.screenshot({ path: path.join(screenshots, "log-retried.png"), fullPage: true });
  });

  await step("a bulk retry says how many logs it will retry and reports the result", async () => {
    await page.goto(`${url}#/logs?destination_id=${destinationId}&status=delivered`);
    await page.locator(`a[data-log="${logId}"]`).waitFor();
    await page.getByRole("button", { name: "Retry matching…" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.waitFor();
    const text = await dialog.textContent();
    check(text.includes("Retry 1 delivered log matching this search?"), `the confirmation counts: ${text}`);
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await page.getByRole("button", { name: "Retry matching…" }).click();
    await dialog.getByRole("button", { name: "Retry" }).click();
    await page.getByRole("status").filter({ hasText: "Retried 1 log; 0 not retried." }).waitFor();
  });

  await step("a held destination is highlighted with why and its last error", async () => {
    await page.goto(`${url}#/destinations/${env("HELD_DESTINATION_ID")}`);
    const queue = page.locator(".queue.held");
    await queue.getByRole("heading", { name: "Held: its head is failing" }).waitFor();
    await queue.getByText(env("HELD_LOG_ID")).waitFor();
    const lastError = await queue.locator(".error-text").textContent();
    check(lastError.includes("500"), `the last error says what the receiver answered: ${lastError}`);
    await page.screenshot({ path: path.join(screenshots, "destination-held.png"), fullPage: true });
  });

  await step("pause, skip (the confirmation names the log) and resume", async () => {
    const dialog = page.getByRole("dialog");
    await page.getByRole("button", { name: "Pause…" }).click();
    await dialog.getByRole("button", { name: "Pause" }).click();
    await page.getByRole("heading", { name: "Held: paused by an operator" }).waitFor();
    await page.getByRole("button", { name: "Skip the head…" }).click();
    const question = await dialog.textContent();
    check(question.includes(`Skip log ${env("HELD_LOG_ID")}?`), `the confirmation names the log: ${question}`);
    await dialog.getByRole("button", { name: "Skip it" }).click();
    await page.getByRole("status").filter({ hasText: `Log ${env("HELD_LOG_ID")} was cancelled.` }).waitFor();
    await page.getByRole("button", { name: "Resume…" }).click();
    await dialog.getByRole("button", { name: "Resume" }).click();
    await page.getByRole("heading", { name: "Delivering" }).waitFor();
    await page.goto(`${url}#/logs/${env("HELD_LOG_ID")}`);
    await page.locator("dl.summary .badge").filter({ hasText: "cancelled" }).waitFor();
  });

  await step("an edit the API refuses shows its text beside the field", async () => {
    await page.goto(`${url}#/destinations/${env("HELD_DESTINATION_ID")}`);
    await page.getByLabel("Verification token").fill("two words");
    await page.getByRole("button", { name: "Save" }).click();
    const beside = page.locator("#field-verification_token-error");
    await beside.waitFor();
    check((await beside.textContent()).startsWith("verification_token must be"), "the API's text is beside the field");
    await page.getByLabel("Timeout (ms)").fill("7000");
    await page.getByLabel("Verification token").fill("a-new-token");
    await page.getByRole("button", { name: "Save" }).click();
    await page.getByRole("status").filter({ hasText: "Saved." }).waitFor();
    await page.screenshot({ path: path.join(screenshots, "destination.png"), fullPage: true });
  });

  await step("the layout works in a narrow window", async () => {
    await page.setViewportSize({ width: 400, height: 800 });
    await page.goto(`${url}#/logs`);
    await page.locator(`a[data-log="${logId}"]`).waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `the page does not scroll sideways (by ${overflow} px); tables scroll within their frame`);
    await page.screenshot({ path: path.join(screenshots, "logs-narrow.png"), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 860 });
  });

  await step("a reload signs out: the token lived in the page's memory only", async () => {
    await page.reload();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
  });

  await step("source A signs in with its client credentials and sees its log", async () => {
    await signInAsSource(env("SOURCE_A_ID"), env("SOURCE_A_SECRET"));
    await page.locator(`a[data-log="${logId}"]`).waitFor();
    check((await page.getByLabel("Organization ID").count()) === 0, "a source is not offered an organization filter");
    // The queue routes take the operator token: a source sees the API's refusal.
    await page.goto(`${url}#/destinations/${destinationId}`);
    await page.getByRole("alert").first().waitFor();
    await page.goto(`${url}#/logs`);
    await signOut();
  });

  await step("source B sees none of organization A's logs", async () => {
    await signInAsSource(env("SOURCE_B_ID"), env("SOURCE_B_SECRET"));
    await page.getByText("No logs match this search.").waitFor();
    await page.screenshot({ path: path.join(screenshots, "logs-empty.png"), fullPage: true });
    // A's log by its address: the same 404 as a log that does not exist.
    await page.evaluate((id) => (location.hash = `#/logs/${id}`), logId);
    await page.getByRole("alert").filter({ hasText: `Log ${logId} not found` }).waitFor();
  });

  check(problems.length === 0, `no errors in the browser console (CSP violations show there): ${problems.join(" | ")}`);
  process.stdout.write("console: every check passed\n");
} catch (error) {
  await page.screenshot({ path: path.join(screenshots, "failure.png"), fullPage: true }).catch(() => {});
  process.stderr.write(`${error.stack ?? error}\nbrowser console errors: ${problems.join(" | ") || "none"}\n`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
