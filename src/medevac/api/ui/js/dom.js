// Small DOM helpers: every value goes in as text or an attribute, never as HTML.

/** h("td", {class: "x", onclick: f}, "text", child, ...) */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** A table with a header row; rows are arrays of cells (text or nodes). */
export function table(headers, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows),
  );
}

export function badge(text, kind = String(text || "").toLowerCase()) {
  return h("span", { class: `badge b-${kind.replace(/[^a-z0-9_-]/g, "")}` }, text ?? "-");
}

/** Epoch seconds (or an ISO string) as local date and time. */
export function when(value) {
  if (value === null || value === undefined || value === "") return "-";
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
    `${pad(d.getMilliseconds(), 3)}`
  );
}

/** Seconds as "850 ms", "12.3 s" or "4 min". */
export function seconds(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "-";
  if (Math.abs(s) < 10) return `${Math.round(s * 1000)} ms`;
  if (Math.abs(s) < 600) return `${s.toFixed(1)} s`;
  return `${Math.round(s / 60)} min`;
}

export function brief(value, max = 160) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text && text.length > max ? `${text.slice(0, max - 1)}…` : text ?? "";
}
