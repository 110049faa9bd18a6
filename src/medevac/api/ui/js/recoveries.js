// Recoveries, live: each server's evacuation (from, to, state, time) and a progress bar.

import { confirmAction, perform } from "./actions.js";
import { api } from "./api.js";
import { badge, h, seconds, table, when } from "./dom.js";

const SHOWN_IN_FULL = 10;

function progress(rec) {
  const planned = rec.detail?.planned?.length ?? rec.evacuations.length;
  const done = rec.evacuations.filter((e) => e.ended_at !== null).length;
  const total = Math.max(planned, rec.evacuations.length);
  const ended = rec.ended_at !== null;
  const moved = !["FENCING_FAILED", "NOVA_NEVER_SAW_DOWN", "FAILED"].includes(rec.state);
  const value = total ? done : ended && moved ? 1 : 0;
  const max = total || 1;
  let text = `${done}/${total} servers`;
  if (!total) text = !ended ? "not evacuating yet" : moved ? "no server to move" : "nothing moved";
  return h(
    "div",
    { class: "progress-row" },
    h("progress", { max, value, "data-recovery": rec.id }),
    h("span", { class: "num" }, text),
  );
}

// Only a host's latest recovery may be retried: the server refuses an older one.
function retryButton(rec, ctx, latest) {
  if (ctx.me.role !== "admin" || rec.state !== "FENCING_FAILED" || !latest) return null;
  return h(
    "button",
    {
      type: "button",
      class: "act",
      "data-action": "retry",
      onclick: async () => {
        const ok = await confirmAction({
          title: `Retry the recovery of ${rec.host}?`,
          text: `Fencing ${rec.host} failed. Once its BMC answers again, the recovery starts over: it fences the host first and moves nothing unless that is confirmed.`,
          confirm: "Retry",
        });
        if (ok) await perform(`retry ${rec.host}'s recovery`, `/v1/recoveries/${encodeURIComponent(rec.id)}/retry`);
        ctx.refresh();
      },
    },
    "Retry",
  );
}

function card(rec, ctx, latest = true) {
  const took = (e) => (e.ended_at !== null ? seconds(e.ended_at - e.started_at) : seconds(Date.now() / 1000 - e.started_at));
  return h(
    "article",
    { class: "recovery", "data-recovery": rec.id, "data-host": rec.host, "data-state": rec.state },
    h(
      "header",
      {},
      h("h3", {}, h("a", { href: `#/recoveries/${encodeURIComponent(rec.id)}` }, rec.host)),
      badge(rec.state),
      h("span", {}, `level ${rec.level}`),
      h("span", {}, `started ${when(rec.started_at)}`),
      h("span", {}, rec.ended_at !== null ? `took ${seconds(rec.ended_at - rec.started_at)}` : "running"),
      retryButton(rec, ctx, latest),
    ),
    progress(rec),
    rec.evacuations.length
      ? table(
          ["Server", "From", "To", "State", "Attempts", "Time"],
          rec.evacuations.map((e) =>
            h(
              "tr",
              { "data-server": e.server_id },
              h("td", {}, e.server_name || e.server_id),
              h("td", {}, e.from_host),
              h("td", {}, e.to_host ?? "-"),
              h("td", {}, badge(e.result)),
              h("td", { class: "num" }, e.attempts),
              h("td", { class: "num" }, took(e)),
            ),
          ),
        )
      : null,
  );
}

export const recoveriesPage = {
  id: "recoveries",
  title: "Recoveries",
  topics: ["recoveries"],
  async render(ctx) {
    const { recoveries } = await api("/v1/recoveries?limit=50");
    const full = await Promise.all(
      recoveries.slice(0, SHOWN_IN_FULL).map((r) => api(`/v1/recoveries/${encodeURIComponent(r.id)}`)),
    );
    const rest = recoveries.slice(SHOWN_IN_FULL);
    const hosts = new Set();
    const latest = (r) => !hosts.has(r.host) && hosts.add(r.host); // newest first
    return [
      h("h2", {}, `Recoveries (${recoveries.length})`),
      full.length ? full.map((r) => card(r, ctx, latest(r))) : h("p", { class: "hint" }, "No recovery yet."),
      rest.length
        ? table(
            ["Started", "Host", "State", "Level", "Ended"],
            rest.map((r) => h("tr", {}, h("td", {}, h("a", { href: `#/recoveries/${encodeURIComponent(r.id)}` }, when(r.started_at))), h("td", {}, r.host), h("td", {}, badge(r.state)), h("td", {}, r.level), h("td", {}, when(r.ended_at)))),
          )
        : null,
    ];
  },
};

export const recoveryPage = {
  id: "recovery",
  title: "Recovery",
  topics: ["recoveries"],
  async render(ctx) {
    const rec = await api(`/v1/recoveries/${encodeURIComponent(ctx.param)}`);
    return [h("p", {}, h("a", { href: "#/recoveries" }, "← all recoveries")), card(rec, ctx), h("pre", { class: "detail" }, JSON.stringify(rec.detail, null, 2))];
  },
};
