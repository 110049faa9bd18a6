// Incidents: the list, and one incident's timeline, profile chart, actions and events.

import { api, ApiError } from "./api.js";
import { badge, brief, h, seconds, table, when } from "./dom.js";

function link(id, text) {
  return h("a", { href: `#/incidents/${encodeURIComponent(id)}` }, text);
}

export const incidentsPage = {
  id: "incidents",
  title: "Incidents",
  topics: ["incidents"],
  async render() {
    const { incidents } = await api("/v1/incidents?limit=100");
    const rows = incidents.map((i) =>
      h(
        "tr",
        { "data-incident": i.id, "data-host": i.host },
        h("td", {}, link(i.id, when(i.opened_at))),
        h("td", { class: "name" }, i.host),
        h("td", {}, i.kind),
        h("td", {}, badge(i.state)),
        h("td", {}, i.verdicts.map((v) => v.kind).join(", ")),
        h("td", { class: "num" }, `${i.actions.filter((a) => a.ok).length}/${i.actions.length}`),
        h("td", { class: "num" }, i.events.reduce((n, e) => n + e.count, 0)),
        h("td", {}, i.recovery_id ? h("a", { href: `#/recoveries/${encodeURIComponent(i.recovery_id)}` }, "recovery") : "-"),
        h("td", {}, i.closed_by || (i.held_reason ? `held: ${i.held_reason}` : "")),
      ),
    );
    return [
      h("h2", {}, `Incidents (${incidents.length})`),
      table(
        ["Opened", "Host", "Kind", "State", "Verdicts", "Actions ok", "Events", "Recovery", "Note"],
        rows,
        { id: "incidents-table" },
      ),
    ];
  },
};

async function chart(id) {
  try {
    const blob = await api(`/v1/incidents/${encodeURIComponent(id)}/profile.svg`);
    const img = h("img", { class: "chart", alt: `profile of incident ${id}`, id: "profile-chart" });
    img.src = URL.createObjectURL(blob);
    img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
    return img;
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) return null;
    throw error;
  }
}

function timeline(profile) {
  const present = profile.checkpoints.filter((c) => c.at !== null).sort((a, b) => a.at - b.at);
  return table(
    ["", "Checkpoint", "By", "Since T00"],
    present.map((c) =>
      h("tr", { "data-checkpoint": c.name }, h("td", {}, c.name), h("td", {}, c.label), h("td", {}, c.component), h("td", { class: "num" }, seconds(c.offset_s))),
    ),
    { id: "timeline" },
  );
}

function goals(profile) {
  return profile.goals.map((g) =>
    h(
      "div",
      { class: "goal" },
      h("h4", {}, `${g.label}: ${seconds(g.total_s)}`),
      table(
        ["Component", "Time", "Share"],
        g.components.map((c) => h("tr", {}, h("td", {}, c.component), h("td", { class: "num" }, seconds(c.seconds)), h("td", { class: "num" }, `${Math.round(c.share * 100)} %`))),
      ),
    ),
  );
}

export const incidentPage = {
  id: "incident",
  title: "Incident",
  topics: ["incidents", "recoveries"],
  async render(ctx) {
    const id = ctx.param;
    const inc = await api(`/v1/incidents/${encodeURIComponent(id)}`);
    let profile = null;
    try {
      profile = await api(`/v1/incidents/${encodeURIComponent(id)}/profile`);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409)) throw error;
    }
    const img = profile ? await chart(id) : null;
    const actions = table(
      ["Action", "Target", "Value", "Result", "Attempts", "Took", "Error"],
      inc.actions.map((a) =>
        h(
          "tr",
          {},
          h("td", {}, a.kind),
          h("td", {}, a.target),
          h("td", {}, a.value ?? ""),
          h("td", {}, a.skipped ? badge("skipped") : badge(a.ok ? "ok" : "failed")),
          h("td", { class: "num" }, a.attempts ?? "-"),
          h("td", { class: "num" }, a.ended && a.started ? seconds(a.ended - a.started) : "-"),
          h("td", { class: "error" }, a.error ?? ""),
        ),
      ),
      { id: "actions" },
    );
    const events = table(
      ["At", "Types", "Events", "Deliveries"],
      inc.events.map((e) => h("tr", {}, h("td", {}, when(e.at)), h("td", {}, e.types.join(", ")), h("td", { class: "num" }, e.count), h("td", { class: "num" }, e.deliveries))),
      { id: "events" },
    );
    const verdicts = table(
      ["At", "Verdict", "Subject", "Evidence"],
      inc.verdicts.map((v) => h("tr", {}, h("td", {}, when(v.at)), h("td", {}, v.kind), h("td", {}, v.subject ?? ""), h("td", { class: "detail" }, brief(v.evidence, 200)))),
    );
    return [
      h("p", {}, h("a", { href: "#/incidents" }, "← all incidents")),
      h("h2", {}, `Incident ${inc.id}`),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Host"), h("dd", { id: "incident-host" }, inc.host),
        h("dt", {}, "State"), h("dd", {}, badge(inc.state)),
        h("dt", {}, "Opened"), h("dd", {}, when(inc.opened_at)),
        h("dt", {}, "Closed"), h("dd", {}, inc.closed_at ? `${when(inc.closed_at)} (${inc.closed_by ?? ""})` : "-"),
        h("dt", {}, "Recovery"), h("dd", {}, inc.recovery_id ? h("a", { href: `#/recoveries/${encodeURIComponent(inc.recovery_id)}` }, inc.recovery_id) : "-"),
        h("dt", {}, "Trace"), h("dd", {}, inc.trace_id),
      ),
      h("h3", {}, "Timeline"),
      profile ? [img, timeline(profile), goals(profile)] : h("p", { class: "hint" }, "No profile yet."),
      h("h3", {}, "Verdicts"),
      verdicts,
      h("h3", {}, "Actions"),
      actions,
      h("h3", {}, "Events sent"),
      events,
    ];
  },
};
