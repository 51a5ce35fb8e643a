// zndraw-joblib dashboard: plain JavaScript, no framework, no build step.
// State comes from CONFIG.state as a long-poll; actions use the queue's REST API.
"use strict";

const CONFIG = JSON.parse(document.getElementById("config").textContent);
const TOKEN_KEY = "zndraw-joblib-token";
const PAGES = ["overview", "jobs", "workers", "tasks"];
let state = null;
let poll = null; // the AbortController of the running long-poll
let seq = null;

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function notice(text) {
  const box = $("#notice");
  box.textContent = text || "";
  box.hidden = !text;
}

function headers(extra) {
  const out = Object.assign({}, extra || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) out.Authorization = "Bearer " + token;
  return out;
}

async function call(method, path, body, extra) {
  const init = { method, headers: headers(extra), credentials: "same-origin" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    showLogin();
    throw new Error("not logged in");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response.status === 204 ? null : response.json();
}

function showLogin() {
  stopPolling();
  sessionStorage.removeItem(TOKEN_KEY);
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  for (const page of PAGES) $("#page-" + page).hidden = true;
  if (CONFIG.login) {
    $("#page-login").hidden = false;
  } else {
    notice("Not signed in: sign in to the application first, then reload this page.");
  }
}

async function login(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const response = await fetch(CONFIG.login, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ username: form.get("username"), password: form.get("password") }),
  });
  if (!response.ok) {
    notice("Login failed: wrong e-mail or password.");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, (await response.json()).access_token);
  notice("");
  $("#page-login").hidden = true;
  start();
}

function logout() {
  showLogin();
}

function currentPage() {
  const name = location.hash.slice(1);
  return PAGES.includes(name) ? name : "overview";
}

function showPage() {
  const page = currentPage();
  for (const name of PAGES) $("#page-" + name).hidden = name !== page;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
  }
}

function filters() {
  const form = new FormData($("#filters"));
  const out = {};
  for (const key of ["room", "job", "status"]) if (form.get(key)) out[key] = form.get(key);
  return out;
}

function stopPolling() {
  if (poll) poll.abort();
  poll = null;
}

async function loop() {
  stopPolling();
  const mine = new AbortController();
  poll = mine;
  seq = null;
  let last = 0;
  while (poll === mine) {
    // At most one snapshot a second: a busy queue changes far more often than that.
    const pause = last + 1000 - Date.now();
    if (seq !== null && pause > 0) await new Promise((resolve) => setTimeout(resolve, pause));
    if (poll !== mine) return;
    last = Date.now();
    const params = new URLSearchParams(filters());
    if (seq !== null) { params.set("since", seq); params.set("wait", "20"); }
    try {
      const response = await fetch(`${CONFIG.state}?${params}`, {
        headers: headers(), credentials: "same-origin", signal: mine.signal,
      });
      if (response.status === 401) { showLogin(); return; }
      if (!response.ok) throw new Error(String(response.status));
      state = await response.json();
      seq = state.seq;
      $("#live").textContent = "live · " + new Date().toLocaleTimeString();
      render();
    } catch (error) {
      if (mine.signal.aborted) return;
      $("#live").textContent = "reconnecting…";
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

function ago(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.round(seconds)}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  return `${Math.round(seconds / 3600)}h ago`;
}

function short(id) { return id ? id.slice(0, 8) : ""; }

function chart(svg, series, colors) {
  svg.replaceChildren();
  const max = Math.max(1, ...series.flat());
  series.forEach((values, i) => {
    const points = values.map((v, x) => `${(x / (values.length - 1)) * 300},${78 - (v / max) * 74}`);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colors[i]);
    line.setAttribute("stroke-width", "2");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
  });
}

function fillSelect(select, values) {
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "all"), ...values.map((v) => el("option", { value: v }, v)));
  select.value = values.includes(chosen) ? chosen : "";
}

function render() {
  const s = state;
  const c = s.charts;
  chart($("#chart-depth"), [c.depth], ["#b7791f"]);
  chart($("#chart-throughput"), [c.completed, c.failed], ["#1f8a4c", "#c0392b"]);
  $("#depth-now").textContent = `${s.jobs.reduce((n, j) => n + j.pending, 0)} pending`;
  const done = c.completed.reduce((a, b) => a + b, 0);
  const failed = c.failed.reduce((a, b) => a + b, 0);
  $("#throughput-now").textContent = `${done} completed, ${failed} failed`;
  $("#rooms").replaceChildren(...s.rooms.map((room) => el("li", {},
    el("a", { href: "#tasks", onclick: () => { $("#filters").room.value = room; loop(); } }, room))));

  $("#jobs-table tbody").replaceChildren(...s.jobs.map((j) => el("tr", { "data-job": j.full_name },
    el("td", {}, el("code", {}, `${j.category}:${j.name}`)),
    el("td", {}, j.room),
    el("td", { class: j.workers ? "ok" : "bad" }, j.workers),
    el("td", {}, j.pending),
    el("td", {}, j.active),
    el("td", {}, el("button", { type: "button", onclick: () => showSchema(j) }, "schema")))));

  $("#workers-table tbody").replaceChildren(...s.workers.map((w) => el("tr", { "data-worker": w.id },
    el("td", {}, el("code", { title: w.id }, short(w.id))),
    el("td", { class: w.stale ? "stale" : "" }, ago(w.last_heartbeat), w.stale ? " (stale)" : ""),
    el("td", {}, w.jobs.join(", ")),
    el("td", {}, w.tasks.map((t) => el("code", { title: t }, short(t) + " "))),
    el("td", {}, w.can_remove
      ? el("button", { type: "button", class: "danger", onclick: () => removeWorker(w) }, "remove")
      : null))));

  fillSelect($("#filters").room, s.rooms);
  fillSelect($("#filters").job, s.jobs.map((j) => j.full_name));
  $("#task-total").textContent = `(${s.tasks.length} of ${s.total})`;
  $("#tasks-table tbody").replaceChildren(...s.tasks.map(taskRow));
  for (const table of document.querySelectorAll("table")) label(table);
}

// Phones show rows as cards: each cell carries its column's name.
function label(table) {
  const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const row of table.querySelectorAll("tbody tr")) {
    [...row.children].forEach((cell, i) => { if (names[i]) cell.dataset.label = names[i]; });
  }
}

function taskRow(t) {
  const details = [];
  if (t.message) details.push(el("div", {}, t.message));
  if (t.error) details.push(el("pre", { class: "bad" }, t.error));
  if (t.result) details.push(el("details", {}, el("summary", {}, "result"), el("pre", {}, t.result)));
  details.push(el("details", {}, el("summary", {}, "payload"), el("pre", {}, t.payload)));
  return el("tr", { "data-task": t.id, "data-status": t.status },
    el("td", {}, el("code", { title: t.id }, short(t.id)),
      t.retry_of ? el("div", {}, el("span", { class: "tag", title: t.retry_of }, "retry of " + short(t.retry_of))) : null,
      el("div", { class: "muted" }, ago(t.created_at))),
    el("td", {}, el("code", {}, t.job)),
    el("td", {}, t.room),
    el("td", {}, el("span", { class: "status status-" + t.status }, t.status),
      t.cancel_requested && !["cancelled", "completed", "failed"].includes(t.status) ? " (cancelling)" : ""),
    el("td", {}, t.progress !== null ? el("progress", { max: 1, value: t.progress }) : ""),
    el("td", {}, `${t.attempt}/${t.max_attempts}`),
    el("td", {}, details),
    el("td", {},
      t.can_cancel ? el("button", { type: "button", class: "danger", onclick: () => cancelTask(t) }, "cancel") : null,
      t.can_retry ? el("button", { type: "button", onclick: () => retryTask(t) }, "retry") : null));
}

async function act(what, work) {
  try {
    await work();
    notice("");
  } catch (error) {
    notice(`${what} failed: ${error.message}`);
  }
}

function cancelTask(t) {
  return act("Cancel", () => call("POST", `${CONFIG.api}/tasks/${t.id}/cancel`));
}

function retryTask(t) {
  return act("Retry", async () => {
    const full = await call("GET", `${CONFIG.api}/tasks/${t.id}`);
    const room = encodeURIComponent(t.room);
    await call("POST", `${CONFIG.api}/rooms/${room}/tasks/${t.job}`,
      { payload: full.payload, priority: full.priority, max_attempts: t.max_attempts },
      { "Idempotency-Key": "retry-" + t.id });
  });
}

function removeWorker(w) {
  if (!confirm(`Remove worker ${short(w.id)}? Its tasks are released.`)) return undefined;
  return act("Remove", () => call("DELETE", `${CONFIG.api}/workers/${w.id}`));
}

async function showSchema(j) {
  await act("Schema", async () => {
    const room = encodeURIComponent(j.room);
    const job = await call("GET", `${CONFIG.api}/rooms/${room}/jobs/${j.full_name}`);
    const box = $("#schema");
    box.textContent = `${j.full_name}\n` + JSON.stringify(job.schema || job.schema_ || job, null, 2);
    box.hidden = false;
  });
}

function start() {
  $("#nav").hidden = false;
  $("#logout").hidden = !CONFIG.login;
  showPage();
  loop();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#filters").addEventListener("change", () => loop());
  window.addEventListener("hashchange", showPage);
  if (CONFIG.login && !sessionStorage.getItem(TOKEN_KEY)) showLogin();
  else start();
});
