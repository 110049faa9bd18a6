// The audit log: every transition, verdict, recovery step and operator action.

import { api } from "./api.js";
import { brief, h, table, when } from "./dom.js";

export const auditPage = {
  id: "audit",
  title: "Audit",
  topics: ["audit"],
  async render() {
    const { events } = await api("/v1/audit?limit=200");
    return [
      h("h2", {}, "Audit log (newest first)"),
      table(
        ["At", "Kind", "Subject", "Actor", "Detail"],
        events.map((e) =>
          h(
            "tr",
            { "data-kind": e.kind },
            h("td", {}, when(e.at)),
            h("td", {}, e.kind),
            h("td", {}, e.subject),
            h("td", {}, e.actor),
            h("td", { class: "detail" }, brief(e.detail, 200)),
          ),
        ),
        { id: "audit-table" },
      ),
    ];
  },
};
