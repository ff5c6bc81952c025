// The console's one door to Carrier: the public HTTP API, the same routes and the same
// authorization as any other client (no private back door).
//
// The token lives in this module's memory only: never in a URL, a cookie or Web Storage, so a
// reload or a new tab signs out. That is the price of keeping a bearer token out of reach of
// anything that outlives the page.

let session = null;
const listeners = new Set();

/** An answer the API refused: `text` is the API's own error text. */
export class ApiError extends Error {
  constructor(status, text) {
    super(text);
    this.status = status;
  }
}

/** The error text of a refused answer, in whichever format the route answers errors. */
export function errorText(status, body) {
  const dataModel = body?.Meta?.Errors?.[0]?.Text;
  const fhir = body?.issue?.[0]?.details?.text;
  const oauth = body?.error_description ?? body?.error;
  return dataModel ?? fhir ?? oauth ?? `HTTP ${status}`;
}

export function current() {
  return session;
}

export function isOperator() {
  return session?.role === "operator";
}

/** Calls `listener(session)` whenever one signs in or out. */
export function onSessionChange(listener) {
  listeners.add(listener);
}

function setSession(next) {
  session = next;
  for (const listener of listeners) listener(session);
}

// Why the last session ended (an expired token), shown once on the sign-in page.
let signOutReason = null;

export function signOut(reason) {
  signOutReason = reason ?? null;
  setSession(null);
}
export function takeSignOutReason() {
  const reason = signOutReason;
  signOutReason = null;
  return reason;
}

/** The query string of `params`, leaving out empty values. */
export function queryString(params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params ?? {})) {
    if (value !== undefined && value !== null && value !== "") query.set(key, value);
  }
  const text = query.toString();
  return text ? `?${text}` : "";
}

/**
 * One API call: resolves to the parsed JSON body of a 2xx answer and throws `ApiError` with the
 * API's own text otherwise. A 401 ends the session (the token expired or was revoked).
 */
export async function call(method, path, { query, json, form, token } = {}) {
  const headers = { Accept: "application/json" };
  const bearer = token ?? session?.token;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    headers["Content-Type"] = "application/x-www-form-urlencoded";
    body = new URLSearchParams(form).toString();
  }
  let answer;
  try {
    answer = await fetch(path + queryString(query), { method, headers, body, credentials: "omit", cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, `Carrier did not answer (${error.message})`);
  }
  const text = await answer.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (answer.ok) return parsed;
  const message = errorText(answer.status, parsed);
  if (answer.status === 401 && session && !token) signOut(`Signed out: ${message}`);
  throw new ApiError(answer.status, message);
}

/** Signs in with the operator token, checked with a call every caller may make. */
export async function signInOperator(token) {
  await call("GET", "/v1/logs", { query: { limit: 1 }, token });
  setSession({ token, role: "operator", label: "Operator" });
}

/** Signs in as a source: its client ID and secret exchanged for a token at /oauth/token. */
export async function signInSource(clientId, clientSecret) {
  const answer = await call("POST", "/oauth/token", {
    form: { grant_type: "client_credentials", client_id: clientId, client_secret: clientSecret },
    token: "",
  });
  const expiresAt = Date.now() + (answer.expires_in ?? 0) * 1000;
  setSession({ token: answer.access_token, role: "source", label: `Source ${clientId}`, expiresAt });
}
