// The dashboard: sign-in, tabs, and each page drawn again when the stream says that
// what it shows changed.

import { alarmsPage } from "./alarms.js";
import { api, ApiError, session } from "./api.js";
import { auditPage } from "./audit.js";
import { h } from "./dom.js";
import { hostsPage } from "./hosts.js";
import { incidentPage, incidentsPage } from "./incidents.js";
import { recoveriesPage, recoveryPage } from "./recoveries.js";
import { follow } from "./stream.js";

const TABS = [hostsPage, incidentsPage, recoveriesPage, alarmsPage, auditPage];
const DETAIL = { incidents: incidentPage, recoveries: recoveryPage };
// What each role may read: a member reads its project's alarms only.
const READABLE = { admin: TABS, reader: TABS, member: [alarmsPage] };
const DEBOUNCE = 100; // ms: a burst of changes is drawn once

const $ = (id) => document.getElementById(id);
const state = { me: null, page: null, param: null, stream: null, timer: null, poll: null, drawing: null, again: false };

function route() {
  const [tab, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const readable = READABLE[state.me.role] ?? [];
  const base = readable.find((p) => p.id === tab) ?? readable[0];
  const param = rest.length ? decodeURIComponent(rest.join("/")) : null;
  return { page: param && DETAIL[base.id] ? DETAIL[base.id] : base, tab: base.id, param };
}

function drawTabs(active) {
  const readable = READABLE[state.me.role] ?? [];
  $("tabs").replaceChildren(
    ...readable.map((p) =>
      h("a", { href: `#/${p.id}`, class: p.id === active ? "active" : "", "data-tab": p.id }, p.title),
    ),
  );
}

const context = () => ({ me: state.me, param: state.param, refresh: () => draw() });

/** Draw the current page from fresh data; a request to draw while drawing draws once more after. */
async function draw() {
  if (state.drawing) {
    state.again = true;
    return state.drawing;
  }
  const page = state.page;
  const target = $("page");
  state.drawing = (async () => {
    try {
      const nodes = await page.render(context());
      if (page !== state.page) return; // the operator moved on meanwhile
      target.replaceChildren(...[nodes].flat(Infinity).filter(Boolean));
      target.dataset.page = page.id;
      target.dataset.drawn = String(Number(target.dataset.drawn || 0) + 1);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return signOut("The token is no longer accepted.");
      target.replaceChildren(h("p", { class: "error", role: "alert" }, `Cannot show ${page.title.toLowerCase()}: ${error.message}`));
    } finally {
      state.drawing = null;
      if (state.again) {
        state.again = false;
        draw();
      }
    }
  })();
  return state.drawing;
}

function show() {
  const { page, tab, param } = route();
  state.page = page;
  state.param = param;
  drawTabs(tab);
  clearInterval(state.poll);
  if (page.poll) state.poll = setInterval(() => document.visibilityState === "visible" && draw(), page.poll);
  $("page").replaceChildren(h("p", { class: "hint" }, "Loading…"));
  draw();
}

function changed(change) {
  if (!state.page?.topics.includes(change.topic)) return;
  clearTimeout(state.timer);
  state.timer = setTimeout(draw, DEBOUNCE);
  if (state.page.trailing) setTimeout(draw, state.page.trailing);
}

function setLive(status) {
  const live = $("live");
  live.className = `live ${status === "live" ? "on" : "off"}`;
  live.textContent = status === "live" ? "live" : status === "denied" ? "no live changes" : "reconnecting…";
}

function startStream() {
  state.stream = follow({
    onStatus: setLive,
    onEvent: (name, data) => {
      if (name === "hello") draw(); // whatever changed while away is shown
      else if (name === "change") changed(data);
    },
  });
}

function signOut(message = "") {
  session.token = null;
  state.stream?.stop();
  state.stream = null;
  state.me = null;
  clearInterval(state.poll);
  $("tabs").hidden = true;
  $("page").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  setLive("off");
  $("live").textContent = "offline";
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("token").value = "";
  $("token").focus();
}

async function signIn() {
  try {
    state.me = await api("/v1/whoami");
  } catch (error) {
    const why = error instanceof ApiError && error.status < 500 ? error.message : `the controller does not answer (${error.message})`;
    return signOut(`Not signed in: ${why}`);
  }
  const me = state.me;
  document.body.dataset.role = me.role;
  $("who").textContent = `${me.name} (${me.role}${me.project_id ? `, project ${me.project_id}` : ""})`;
  $("signin").hidden = true;
  $("tabs").hidden = false;
  $("page").hidden = false;
  $("signout").hidden = false;
  show();
  startStream();
}

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  session.token = $("token").value.trim();
  signIn();
});
$("signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", () => state.me && show());

if (session.token) signIn();
else signOut();
