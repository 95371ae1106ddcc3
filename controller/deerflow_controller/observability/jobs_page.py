"""The jobs pages: one self-contained page at ``/jobs`` that lists the jobs the controller holds
(``/api/jobs``) and, with ``#job=ID`` in its fragment, shows one job (``/api/job?id=ID``): its
tasks as a table, the DAG's edges, a timeline of its attempts per agent (like Dask's task
stream), each failure with its error and detail, and each task's events.

Every value shown came from a client (job and task ids, names, handlers, details): the script
builds the page with DOM calls and ``textContent`` only, never ``innerHTML``, so no value is
ever parsed as markup. The token travels in the fragment (``#token=...``) as on the dashboard.
"""

from __future__ import annotations

JOBS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>deerflow-parallel jobs</title>
<style>
  :root { --bg:#0f1419; --panel:#182029; --line:#2a3440; --text:#d8dee6; --dim:#8b98a5;
          --ok:#4cc38a; --warn:#f0b429; --bad:#ef5350; --accent:#5aa9ff; }
  * { box-sizing: border-box; }
  body { margin:0; background:var(--bg); color:var(--text);
         font:13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  header { display:flex; gap:16px; align-items:baseline; padding:10px 16px;
           border-bottom:1px solid var(--line); }
  header h1 { font-size:16px; margin:0; } a { color:var(--accent); }
  .meta { color:var(--dim); }
  main { padding:12px 16px; display:grid; gap:12px; }
  section { background:var(--panel); border:1px solid var(--line); border-radius:6px;
            padding:10px 12px; min-width:0; overflow-x:auto; }
  h2 { font-size:12px; text-transform:uppercase; letter-spacing:.06em; color:var(--dim);
       margin:0 0 8px; }
  table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
  th, td { text-align:left; padding:3px 6px; border-bottom:1px solid var(--line);
           white-space:nowrap; }
  th { color:var(--dim); font-weight:500; font-size:11px; }
  .SUCCEEDED { color:var(--ok); } .FAILED, .TIMED_OUT { color:var(--bad); }
  .CANCELLED, .RETRYING { color:var(--warn); } .RUNNING { color:var(--accent); }
  .empty { color:var(--dim); font-style:italic; }
  ul { list-style:none; margin:0; padding:0; }
  li { padding:4px 0; border-bottom:1px solid var(--line); overflow-wrap:anywhere; }
  .msg { display:block; color:var(--dim); font-size:12px; white-space:pre-wrap; }
  svg.timeline { width:100%; display:block; }
  svg text { fill:var(--text); font-size:10px; }
  svg .lane { fill:var(--dim); font-size:11px; }
</style>
</head>
<body data-updates="0" data-view="">
<header>
  <h1>deerflow-parallel jobs</h1>
  <a id="to-dashboard" href="./">dashboard</a>
  <a id="to-jobs" href="jobs">all jobs</a>
  <span class="meta" id="updated">connecting&hellip;</span>
</header>
<main>
  <section id="list-view" hidden>
    <h2>Jobs <span class="meta" id="jobs-held"></span></h2>
    <div class="meta" id="jobs-filter"></div>
    <table><thead><tr><th>job</th><th>name</th><th>state</th><th>tasks</th><th>by state</th>
      <th>age</th><th>tenant</th></tr></thead><tbody id="jobs"></tbody></table>
  </section>
  <section id="job-view" hidden>
    <h2>Job</h2>
    <div id="job-summary"></div>
    <div class="meta" id="job-note"></div>
  </section>
  <section id="failures-view" hidden>
    <h2>Failures</h2>
    <ul id="job-failures"></ul>
  </section>
  <section id="timeline-view" hidden>
    <h2>Timeline (attempts per agent)</h2>
    <svg class="timeline" id="job-timeline" xmlns="http://www.w3.org/2000/svg"></svg>
  </section>
  <section id="tasks-view" hidden>
    <h2>Tasks</h2>
    <table><thead><tr><th>task</th><th>handler</th><th>state</th><th>attempts</th>
      <th>agent</th><th>predicted</th><th>actual</th><th>cache</th><th>depends on</th>
      <th>trace id</th></tr></thead><tbody id="job-tasks"></tbody></table>
  </section>
  <section id="edges-view" hidden>
    <h2>Dependencies (DAG edges)</h2>
    <ul id="job-edges"></ul>
  </section>
  <section id="events-view" hidden>
    <h2>Events</h2>
    <ul id="job-events"></ul>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
// Builds an element; children are nodes or strings (strings become text nodes, never markup).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  node.append(...children.map((c) => (c instanceof Node ? c : String(c))));
  return node;
}
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}
const secs = (v) => !v ? "\\u2013" : v < 1 ? (v * 1000).toFixed(v < 0.01 ? 2 : 1) + " ms"
  : v.toFixed(v < 10 ? 2 : 1) + " s";
const age = (s) => s < 120 ? s.toFixed(0) + " s" : s < 7200 ? (s / 60).toFixed(0) + " min"
  : (s / 3600).toFixed(1) + " h";
const counts = (m) => Object.entries(m).sort().map(([k, n]) => n + " " + k.toLowerCase())
  .join(", ");
const params = () => new URLSearchParams(location.hash.slice(1));
const token = params().get("token");
const auth = token ? {Authorization: "Bearer " + token} : {};
function link(jobId) {
  const p = new URLSearchParams();
  p.set("job", jobId);
  if (token) p.set("token", token);
  return "jobs#" + p.toString();
}
function fill(tbody, rows, empty, columns) {
  tbody.replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", {class: "empty", colspan: String(columns)}, empty))]));
}
function renderList(data) {
  $("jobs-held").textContent = "(" + data.jobs.length + " of " + data.held + " held)";
  fill($("jobs"), data.jobs.map((j) => el("tr", {"data-job": j.job_id},
    el("td", {}, el("a", {href: link(j.job_id)}, j.job_id)), el("td", {}, j.name),
    el("td", {class: j.state}, j.state), el("td", {}, j.total),
    el("td", {}, counts(j.tasks_by_state)), el("td", {}, age(j.age_s)),
    el("td", {}, j.tenant))), params().get("state") ? "no such jobs held" : "no jobs held", 7);
  // Filters by state, and the next (older) page: the same page with other fragment parameters.
  const here = params();
  const links = ["", "RUNNING", "FAILED", "SUCCEEDED", "CANCELLED"].map((state) => {
    const p = new URLSearchParams();
    if (state) p.set("state", state);
    if (token) p.set("token", token);
    const a = el("a", {href: "jobs#" + p.toString()}, state ? state.toLowerCase() : "all");
    if ((here.get("state") || "") === state) a.style.fontWeight = "bold";
    return [a, " "];
  }).flat();
  if (data.next_cursor) {
    const p = new URLSearchParams(here);
    p.set("cursor", data.next_cursor);
    links.push("\u00b7 ", el("a", {id: "jobs-older", href: "jobs#" + p.toString()}, "older"));
  }
  $("jobs-filter").replaceChildren(...links);
}
function renderTimeline(tasks, now) {
  const spans = [];
  for (const t of tasks) for (const s of t.spans) spans.push([t, s]);
  const box = $("job-timeline");
  if (!spans.length) {
    box.replaceChildren(svg("text", {x: 4, y: 14, class: "lane"}, "no attempt dispatched yet"));
    box.setAttribute("viewBox", "0 0 1000 20");
    return;
  }
  const t0 = Math.min(...spans.map(([, s]) => s.dispatched_at));
  const t1 = Math.max(...spans.map(([, s]) => s.ended_at || now), t0 + 1e-3);
  const agents = [...new Set(spans.map(([, s]) => s.agent_id))].sort();
  const left = 110, width = 880, lane = 22;
  const x = (t) => left + width * (t - t0) / (t1 - t0);
  const nodes = [];
  agents.forEach((a, i) => {
    nodes.push(svg("text", {x: 4, y: i * lane + 15, class: "lane"}, a || "(none)"));
    nodes.push(svg("line", {x1: left, x2: left + width, y1: i * lane + 21, y2: i * lane + 21,
      stroke: "#2a3440"}));
  });
  const color = {SUCCEEDED: "#4cc38a", FAILED: "#ef5350", TIMED_OUT: "#ef5350",
    RETRYING: "#f0b429", CANCELLED: "#8b98a5"};
  for (const [t, s] of spans) {
    const row = agents.indexOf(s.agent_id);
    const start = s.started_at || s.dispatched_at;
    const x0 = x(start), w = Math.max(2, x(s.ended_at || now) - x0);
    const g = svg("g", {class: "span", "data-task": t.task_id});
    g.append(svg("title", {}, t.task_id + " attempt " + s.attempt + " on " + s.agent_id + ": " +
      (s.outcome || "running") + ", " + secs((s.ended_at || now) - start)));
    g.append(svg("rect", {x: x0.toFixed(1), y: row * lane + 3, width: w.toFixed(1),
      height: lane - 6, rx: 2, fill: color[s.outcome] || "#5aa9ff", opacity: 0.85}));
    if (w > 40) g.append(svg("text", {x: (x0 + 3).toFixed(1), y: row * lane + 15},
      t.task_id.slice(0, Math.floor(w / 6))));
    nodes.push(g);
  }
  nodes.push(svg("text", {x: left, y: agents.length * lane + 14, class: "lane"},
    "0 s \\u2013 " + secs(t1 - t0)));
  box.setAttribute("viewBox", "0 0 1000 " + (agents.length * lane + 20));
  box.replaceChildren(...nodes);
}
function renderJob(d) {
  const j = d.job;
  $("job-summary").replaceChildren(el("b", {id: "job-id"}, j.job_id), " ",
    el("span", {id: "job-name"}, j.name), " ", el("span", {class: j.state, id: "job-state"},
    j.state), " \\u00b7 " + j.total + " tasks (" + counts(j.tasks_by_state) + ") \\u00b7 " +
    "submitted " + age(j.age_s) + " ago" + (j.tenant ? " \\u00b7 tenant " : ""),
    j.tenant || "");
  $("job-note").textContent = d.note;
  fill($("job-tasks"), d.tasks.map((t) => el("tr", {"data-task": t.task_id},
    el("td", {}, t.task_id), el("td", {}, t.handler), el("td", {class: t.state}, t.state),
    el("td", {}, t.attempts), el("td", {}, t.agent_id), el("td", {}, secs(t.predicted_s)),
    el("td", {}, secs(t.actual_s)), el("td", {}, t.cache_layer || "\\u2013"),
    el("td", {}, t.depends_on.join(", ")), el("td", {}, t.trace_id || "\\u2013"))),
    "no tasks", 10);
  const edges = [];
  for (const t of d.tasks) for (const dep of t.depends_on) {
    edges.push(el("li", {}, el("b", {}, dep), " \\u2192 ", el("b", {}, t.task_id)));
  }
  $("job-edges").replaceChildren(...(edges.length ? edges
    : [el("li", {class: "empty"}, "no dependencies")]));
  const bad = d.tasks.filter((t) => ["FAILED", "TIMED_OUT", "CANCELLED"].includes(t.state));
  // Each failure: its error, then what its events add (details, earlier attempts' errors).
  const said = (t, e) => [e.error && !(t.error && e.error.message === t.error.message)
    ? e.error.message : "", e.detail].filter((x) => x).join("; ");
  $("job-failures").replaceChildren(...(bad.length ? bad.map((t) => el("li",
    {"data-task": t.task_id}, el("b", {}, t.task_id), " ", el("span", {class: t.state},
    t.state), " " + (t.error ? t.error.kind : ""), el("span", {class: "msg"},
    t.error ? t.error.message : ""), ...t.events.filter((e) => said(t, e)).map((e) =>
    el("span", {class: "msg"}, "attempt " + e.attempt + " " + e.state + ": " + said(t, e)))))
    : [el("li", {class: "empty"}, "no failures")]));
  $("job-events").replaceChildren(...d.tasks.map((t) => el("li", {"data-task": t.task_id},
    el("b", {}, t.task_id), t.events_dropped ? " (" + t.events_dropped + " earlier not shown)"
    : "", ...t.events.map((e) => el("span", {class: "msg"}, "#" + e.seq + " " + e.state +
    " attempt " + e.attempt + (e.agent_id ? " on " : ""), e.agent_id,
    e.cache_layer ? " from the " + e.cache_layer + " cache" : "",
    e.predicted_s ? " predicted " + secs(e.predicted_s) : "",
    e.error ? " \\u2014 " + e.error.kind + ": " : "", e.error ? e.error.message : "",
    e.detail ? " \\u2014 " : "", e.detail || "")))));
  // The controller's clock, not the browser's: a running attempt's bar ends at its "now".
  renderTimeline(d.tasks, j.submitted_at + j.age_s);
}
async function poll() {
  const jobId = params().get("job");
  const view = jobId === null ? "list" : "job";
  document.body.dataset.view = view;
  $("list-view").hidden = view !== "list";
  for (const id of ["job-view", "failures-view", "timeline-view", "tasks-view", "edges-view",
    "events-view"]) $(id).hidden = view !== "job";
  const query = new URLSearchParams();
  for (const k of ["cursor", "state"]) if (params().get(k)) query.set(k, params().get(k));
  const url = view === "list" ? "api/jobs?" + query.toString()
    : "api/job?id=" + encodeURIComponent(jobId);
  let again = 2000;
  try {
    const r = await fetch(url, {cache: "no-store", headers: auth});
    const data = await r.json();
    if (!r.ok) throw new Error("HTTP " + r.status + ": " + data.error);
    if (view === "list") renderList(data); else renderJob(data);
    if (view === "job" && data.job.state !== "RUNNING") again = 10000;
    document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("updated").textContent = "cannot read " + url + " (" + e.message + ")";
  }
  clearTimeout(poll.timer);
  poll.timer = setTimeout(poll, again);
}
if (token) {
  const p = new URLSearchParams();
  p.set("token", token);
  $("to-dashboard").href = "./#" + p.toString();
  $("to-jobs").href = "jobs#" + p.toString();
}
window.addEventListener("hashchange", poll);
poll();
</script>
</body>
</html>
"""
