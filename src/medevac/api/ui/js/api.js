// The controller's JSON API, with the token the operator gave, sent as a header.

const KEY = "medevac.token";

export const session = {
  get token() {
    return sessionStorage.getItem(KEY);
  },
  set token(value) {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  },
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function authHeaders() {
  return { Authorization: `Bearer ${session.token}` };
}

async function errorOf(response) {
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    message =
      body?.error?.message ?? body?.error_message?.faultstring ?? body?.detail ?? message;
  } catch {
    // not JSON: the status text says enough
  }
  return new ApiError(response.status, typeof message === "string" ? message : JSON.stringify(message));
}

/** Call the API; JSON answers are parsed, others returned as a Blob. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { ...authHeaders(), Accept: "application/json" };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  const type = response.headers.get("content-type") || "";
  if (type.includes("application/json")) return response.json();
  return response.blob();
}
