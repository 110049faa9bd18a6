// Hosts: the monitor's view, the lifecycle, the BMC, Nova's view, owner, maintenance.

import { confirmAction, perform } from "./actions.js";
import { api } from "./api.js";
import { badge, h, seconds, table, when } from "./dom.js";

const RELEASABLE = new Set(["AWAITING_RELEASE", "RECOVERED", "FENCING_FAILED"]);
const NO_MAINTENANCE = "maintenance is not available on this controller";

function nova(view) {
  if (!view) return "-";
  const parts = [`${view.status ?? "?"}/${view.state ?? "?"}`];
  if (view.forced_down) parts.push("forced down");
  return parts.join(", ");
}

function maintenanceCell(m) {
  if (!m) return "-";
  const deadline = m.deadline ? ` until ${when(m.deadline)}` : "";
  return h("span", { class: "maintenance" }, `${m.state ?? "on"}: ${m.reason ?? ""}${deadline}`);
}

function missingMaintenance(host) {
  return (error) => (error.message.includes(host) ? null : NO_MAINTENANCE);
}

function actionsFor(host, ctx) {
  const name = host.name;
  const buttons = [];
  const life = host.lifecycle?.state;
  if (RELEASABLE.has(life) || host.nova?.forced_down) {
    buttons.push(
      h("button", {
        type: "button",
        class: "act",
        "data-action": "release",
        onclick: async () => {
          const ok = await confirmAction({
            title: `Release ${name}?`,
            text: `Put ${name} back in service: unset force-down, enable its compute service, restore its ports.`,
            confirm: "Release",
          });
          if (ok) await perform(`release ${name}`, `/v1/hosts/${encodeURIComponent(name)}/release`);
          ctx.refresh();
        },
      }, "Release"),
    );
  }
  if (host.maintenance) {
    buttons.push(
      h("button", {
        type: "button",
        class: "act",
        "data-action": "maintenance-end",
        onclick: async () => {
          const ok = await confirmAction({
            title: `End maintenance of ${name}?`,
            text: `Enable ${name}'s compute service again and tell its servers' owners.`,
            confirm: "End maintenance",
          });
          if (ok)
            await perform(`end maintenance of ${name}`, `/v1/hosts/${encodeURIComponent(name)}/maintenance`, {
              method: "DELETE",
              onMissing: missingMaintenance(name),
            });
          ctx.refresh();
        },
      }, "End maintenance"),
    );
  } else if (life === undefined || life === "UP") {
    buttons.push(
      h("button", {
        type: "button",
        class: "act",
        "data-action": "maintenance-start",
        onclick: async () => {
          const values = await confirmAction({
            title: `Start maintenance of ${name}?`,
            text: `Disable ${name}'s compute service, tell its servers' owners, then move its HA servers away.`,
            confirm: "Start maintenance",
            fields: [
              { name: "reason", label: "Reason", required: true, placeholder: "firmware upgrade" },
              { name: "deadline", label: "Deadline (optional)", type: "datetime-local" },
            ],
          });
          if (values) {
            const deadline = values.deadline ? new Date(values.deadline).toISOString() : null;
            await perform(`start maintenance of ${name}`, `/v1/hosts/${encodeURIComponent(name)}/maintenance`, {
              body: { reason: values.reason, deadline },
              onMissing: missingMaintenance(name),
            });
          }
          ctx.refresh();
        },
      }, "Start maintenance"),
    );
  }
  return buttons;
}

export const hostsPage = {
  id: "hosts",
  title: "Hosts",
  topics: ["hosts"],
  poll: 5000, // phi and heartbeat ages move without any change to announce
  async render(ctx) {
    const { hosts, counters } = await api("/v1/hosts");
    const owners = hosts.some((x) => x.owner !== undefined);
    const maintenance = hosts.some((x) => x.maintenance !== undefined);
    const admin = ctx.me.role === "admin";
    const headers = ["Host", "Zone", "Monitor", "phi", "Last heartbeat", "BMC power", "Nova", "Lifecycle"];
    if (owners) headers.push("Controller");
    if (maintenance) headers.push("Maintenance");
    if (admin) headers.push("Actions");
    const rows = hosts.map((x) => {
      const d = x.detector || {};
      const cells = [
        h("td", { class: "name" }, x.name),
        h("td", {}, x.zone),
        h("td", { "data-col": "monitor" }, badge(x.state)),
        h("td", { class: "num" }, d.phi === undefined ? "-" : d.phi.toFixed(2)),
        h("td", { class: "num" }, d.last_heartbeat_age_s === null ? "never" : seconds(d.last_heartbeat_age_s)),
        h(
          "td",
          { "data-col": "bmc" },
          x.bmc?.power ?? "-",
          x.bmc?.error ? h("small", { class: "error", title: x.bmc.error }, " (no answer)") : null,
        ),
        h("td", {}, nova(x.nova)),
        h("td", { "data-col": "lifecycle" }, badge(x.lifecycle?.state ?? "UP"), x.lifecycle?.since ? h("small", {}, ` since ${when(x.lifecycle.since)}`) : null),
      ];
      if (owners) cells.push(h("td", {}, x.owner ?? "-"));
      if (maintenance) cells.push(h("td", {}, maintenanceCell(x.maintenance)));
      if (admin) cells.push(h("td", { class: "actions" }, actionsFor(x, ctx)));
      return h("tr", { "data-host": x.name }, cells);
    });
    const summary = counters
      ? h(
          "p",
          { class: "hint" },
          `${counters.received} heartbeats received, loop lag p99 ${counters.loop_lag_ms?.p99 ?? "-"} ms, ${counters.loop_stalls} stalls`,
        )
      : null;
    return [h("h2", {}, `Hosts (${hosts.length})`), table(headers, rows, { id: "hosts-table" }), summary];
  },
};
