// Alarms and their history, as the API scopes them (a member: its own project's).

import { api } from "./api.js";
import { badge, brief, h, table, when } from "./dom.js";

function eventType(alarm) {
  return alarm.event_rule?.event_type ?? alarm.type;
}

export const alarmsPage = {
  id: "alarms",
  title: "Alarms",
  topics: ["alarms"],
  trailing: 1500, // the history is written shortly after a state change
  async render() {
    const [alarms, history] = await Promise.all([
      api("/v2/alarms"),
      api("/v2/query/alarms/history", {
        method: "POST",
        body: { orderby: JSON.stringify([{ timestamp: "desc" }]), limit: 100 },
      }),
    ]);
    const names = Object.fromEntries(alarms.map((a) => [a.alarm_id, a.name]));
    const rows = alarms.map((a) =>
      h(
        "tr",
        { "data-alarm": a.alarm_id, "data-project": a.project_id ?? "" },
        h("td", { class: "name" }, a.name),
        h("td", {}, badge(a.state)),
        h("td", {}, a.severity),
        h("td", {}, a.project_id ?? "-"),
        h("td", {}, eventType(a)),
        h("td", {}, when(a.state_timestamp)),
        h("td", { class: "detail" }, a.state_reason ?? ""),
      ),
    );
    const changes = history.map((c) =>
      h(
        "tr",
        { "data-alarm": c.alarm_id },
        h("td", {}, when(c.timestamp)),
        h("td", {}, names[c.alarm_id] ?? c.alarm_id),
        h("td", {}, c.type),
        h("td", {}, c.project_id ?? "-"),
        h("td", { class: "detail" }, brief(c.detail)),
      ),
    );
    return [
      h("h2", {}, `Alarms (${alarms.length})`),
      table(["Name", "State", "Severity", "Project", "Event", "Since", "Reason"], rows, { id: "alarms-table" }),
      h("h3", {}, "History"),
      table(["At", "Alarm", "Change", "Project", "Detail"], changes, { id: "alarm-history" }),
    ];
  },
};
