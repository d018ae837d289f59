// The fleet page: every kiosk with its presence, printers and cash
// acceptor, kept current from the event stream (GET /v1/events), with a
// test print button per printer; a kiosk's own view (#kiosk/<id>) lists
// its recent jobs with reprint (failed, expired) and cancel (queued,
// received) buttons. Calls the gateway's own API with the operator's
// session cookie; state-changing calls carry X-CSRF-Token.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
let filter = "all";
let kiosks = [];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function paperOut(k) {
  return Object.values(k.printers || {}).some((p) => p.paper === "out");
}

function shown(k) {
  if (filter === "offline") return k.status !== "online";
  if (filter === "paper_out") return paperOut(k);
  return true;
}

function printerRow(k, name, p) {
  const state = p.ready ? "ready" : (p.error || "not ready");
  const paper = p.paper === "ok" ? "paper ok" : "paper " + p.paper.replace("_", " ");
  const button = el("button", { "data-kiosk": k.kiosk_id, "data-printer": name, class: "test-print" }, "Test print");
  button.addEventListener("click", () => testPrint(k.kiosk_id, name));
  return el("div", { class: "printer" },
    el("span", {}, name + ": ", el("span", { class: p.ready ? "" : "bad" }, state), " · " + paper),
    button);
}

function kioskLink(k) {
  const a = el("a", { href: "#kiosk/" + encodeURIComponent(k.kiosk_id), class: "kiosk-link" }, k.kiosk_id);
  return a;
}

function card(k) {
  const since = k.status_since ? " since " + new Date(k.status_since).toLocaleTimeString() : "";
  const printers = Object.entries(k.printers || {}).map(([n, p]) => printerRow(k, n, p));
  const cash = k.cash ? [el("div", { class: "muted" }, "Cash acceptor: " + (k.cash.connected ? (k.cash.enabled ? "accepting" : "ready") : "not connected"))] : [];
  return el("section", { class: "kiosk", id: "kiosk-" + k.kiosk_id, "data-status": k.status },
    el("h2", {}, kioskLink(k), el("span", { class: "status " + k.status }, k.status + since)),
    el("div", { class: "muted" }, "Last seen " + ago(k.last_seen) + " · agent " + (k.agent_version || "?") +
      (k.broker ? " · via " + k.broker : "") +
      " · " + k.pending_jobs + " pending job" + (k.pending_jobs === 1 ? "" : "s")),
    ...printers, ...cash);
}

let jobs = [];

function selected() {
  const m = location.hash.match(/^#kiosk\/(.+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

function jobRow(j) {
  const last = (j.history || [])[j.history.length - 1] || {};
  const actions = [];
  if (j.state === "failed" || j.state === "expired") {
    const b = el("button", { class: "reprint", "data-job": j.job_id }, "Reprint");
    b.addEventListener("click", () => act(`/v1/print-jobs/${encodeURIComponent(j.job_id)}/reprint`, "Reprint"));
    actions.push(b);
  }
  if ((j.state === "queued" || j.state === "received") && !j.cancel_pending) {
    const b = el("button", { class: "cancel", "data-job": j.job_id }, "Cancel");
    b.addEventListener("click", () => act(`/v1/print-jobs/${encodeURIComponent(j.job_id)}/cancel`, "Cancel"));
    actions.push(b);
  }
  return el("tr", { id: "job-" + j.job_id, "data-state": j.state },
    el("td", {}, j.job_id.slice(-8)), el("td", {}, j.printer),
    el("td", { class: "state" }, j.state + (j.cancel_pending ? " (cancel asked)" : "")),
    el("td", {}, new Date(j.created_at).toLocaleString()),
    el("td", {}, last.at ? new Date(last.at).toLocaleTimeString() : ""),
    el("td", {}, j.reason || ""), el("td", {}, ...actions));
}

function render() {
  const main = document.getElementById("kiosks");
  const id = selected();
  if (!id) {
    main.replaceChildren(...kiosks.filter(shown).map(card));
    return;
  }
  const k = kiosks.find((x) => x.kiosk_id === id);
  const back = el("a", { href: "#", id: "back" }, "← all kiosks");
  const table = el("table", { id: "jobs" },
    el("thead", {}, el("tr", {}, ...["job", "printer", "state", "created", "last change", "reason", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...jobs.map(jobRow)));
  main.replaceChildren(el("div", { class: "detail" }, back, k ? card(k) : el("p", {}, "Unknown kiosk " + id),
    el("h3", {}, "Recent jobs"), table));
}

async function loadJobs() {
  const id = selected();
  if (!id) { jobs = []; return; }
  const r = await fetch(`/v1/kiosks/${encodeURIComponent(id)}/print-jobs?limit=20`, { credentials: "same-origin" });
  jobs = r.ok ? ((await r.json()).jobs || []) : [];
}

async function act(path, what) {
  const note = document.getElementById("note");
  const r = await fetch(path, { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
  const body = await r.json().catch(() => ({}));
  note.textContent = r.ok ? `${what}: ${body.job_id} ${body.state}` :
    `${what} refused: ${(body.error && body.error.message) || r.status}`;
  reloadSoon();
}

async function load() {
  const r = await fetch("/v1/kiosks", { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/fleet"; return; }
  const body = await r.json();
  kiosks = body.kiosks || body;
  await loadJobs();
  render();
}

window.addEventListener("hashchange", () => load());

async function testPrint(kiosk, printer) {
  const note = document.getElementById("note");
  const r = await fetch(`/v1/kiosks/${encodeURIComponent(kiosk)}/printers/${encodeURIComponent(printer)}/test-print`, {
    method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf },
  });
  const body = await r.json().catch(() => ({}));
  note.textContent = r.ok ? `Test print ${body.job_id} sent to ${kiosk}/${printer}` :
    `Test print refused: ${(body.error && body.error.message) || r.status}`;
}

for (const b of document.querySelectorAll("#filters button")) {
  b.addEventListener("click", () => {
    filter = b.dataset.filter;
    for (const o of document.querySelectorAll("#filters button")) o.classList.toggle("on", o === b);
    render();
  });
}

let pending = null;
function reloadSoon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; load(); }, 500);
}

const events = new EventSource("/v1/events?type=kiosk.*&type=printer.*&type=print_job.*");
for (const t of ["kiosk.online", "kiosk.offline", "printer.status_changed", "print_job.state_changed"]) {
  events.addEventListener(t, reloadSoon);
}
events.onopen = reloadSoon;
setInterval(render, 30000);
load();
