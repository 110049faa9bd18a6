// Operators' actions: each asked for in a dialog, then sent; the server audits it.

import { api, ApiError } from "./api.js";
import { h } from "./dom.js";

let toastTimer = null;

export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = `show ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.className = ""), 6000);
}

/**
 * Ask the operator; resolves to the fields' values ({} without fields) on Confirm,
 * null on Cancel. fields: [{name, label, type, placeholder, required}]
 */
export function confirmAction({ title, text, confirm = "Confirm", fields = [] }) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = confirm;
  const box = document.getElementById("confirm-fields");
  box.replaceChildren(
    ...fields.map((f) =>
      h(
        "label",
        { class: "field" },
        f.label,
        h("input", {
          name: f.name,
          type: f.type || "text",
          placeholder: f.placeholder || "",
          required: f.required || false,
        }),
      ),
    ),
  );
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        if (dialog.returnValue !== "ok") return resolve(null);
        const values = {};
        for (const input of box.querySelectorAll("input")) values[input.name] = input.value;
        resolve(values);
      },
      { once: true },
    );
    dialog.returnValue = "";
    dialog.showModal();
  });
}

/** Send one confirmed action; says what happened either way. */
export async function perform(what, path, { method = "POST", body, onMissing } = {}) {
  try {
    const result = await api(path, { method, body });
    toast(`${what}: done`, "ok");
    return result;
  } catch (error) {
    if (error instanceof ApiError && onMissing && (error.status === 404 || error.status === 405)) {
      const message = onMissing(error);
      if (message) {
        toast(message, "warn");
        return null;
      }
    }
    toast(`${what}: ${error.message}`, "error");
    return null;
  }
}
