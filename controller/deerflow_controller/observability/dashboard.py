"""The live dashboard: one self-contained page (no external scripts, fonts or styles) that polls
``/api/stats`` every second and draws its panels. Inline here rather than a data file so that it
ships with any install of the package."""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>deerflow-parallel</title>
<style>
  :root { --bg:#0f1419; --panel:#182029; --line:#2a3440; --text:#d8dee6; --dim:#8b98a5;
          --ok:#4cc38a; --warn:#f0b429; --bad:#ef5350; --accent:#5aa9ff; }
  * { box-sizing: border-box; }
  body { margin:0; background:var(--bg); color:var(--text);
         font:13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  header { display:flex; gap:16px; align-items:baseline; padding:10px 16px;
           border-bottom:1px solid var(--line); }
  header h1 { font-size:16px; margin:0; }
  header .meta { color:var(--dim); }
  .badge { padding:1px 8px; border-radius:9px; font-size:11px; background:var(--line); }
  .badge.ok { background:#1e4634; color:var(--ok); }
  .badge.bad { background:#4a1f1f; color:var(--bad); }
  main { display:grid; grid-template-columns:repeat(3, 1fr); gap:12px; padding:12px 16px; }
  section { background:var(--panel); border:1px solid var(--line); border-radius:6px;
            padding:10px 12px; min-width:0; }
  section.wide { grid-column:span 2; } section.full { grid-column:1 / -1; }
  h2 { font-size:12px; text-transform:uppercase; letter-spacing:.06em; color:var(--dim);
       margin:0 0 8px; }
  .big { font-size:28px; font-weight:600; } .unit { color:var(--dim); font-size:12px; }
  .kv { display:grid; grid-template-columns:repeat(4, 1fr); gap:6px 12px; margin-top:8px; }
  .kv div span { display:block; color:var(--dim); font-size:11px; }
  .kv div b { font-size:15px; font-variant-numeric:tabular-nums; }
  table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
  th, td { text-align:right; padding:3px 6px; border-bottom:1px solid var(--line);
           white-space:nowrap; }
  th:first-child, td:first-child { text-align:left; }
  th { color:var(--dim); font-weight:500; font-size:11px; }
  .bar { display:inline-block; width:60px; height:8px; background:var(--line);
         border-radius:4px; vertical-align:middle; margin-right:6px; }
  .bar i { display:block; height:100%; background:var(--accent); border-radius:4px; }
  svg.spark { width:100%; height:48px; display:block; margin-top:6px; }
  .empty { color:var(--dim); font-style:italic; }
  ul.sugg { list-style:none; margin:0; padding:0; }
  ul.sugg li { padding:6px 0; border-bottom:1px solid var(--line); }
  ul.sugg .sev { font-size:11px; text-transform:uppercase; margin-right:6px; }
  .critical { color:var(--bad); } .warning { color:var(--warn); } .info { color:var(--accent); }
  .num { color:var(--dim); font-size:11px; }
  ul.err { list-style:none; margin:8px 0 0; padding:0; }
  ul.err li { padding:4px 0; border-bottom:1px solid var(--line); overflow-wrap:anywhere; }
  ul.err .msg { display:block; color:var(--dim); font-size:12px; }
</style>
</head>
<body data-updates="0">
<header>
  <h1>deerflow-parallel</h1>
  <span class="meta">controller <b id="controller-id">&ndash;</b></span>
  <span class="meta">up <b id="uptime">&ndash;</b></span>
  <span id="serving" class="badge">&ndash;</span>
  <span id="tracing" class="badge">tracing</span>
  <a id="to-jobs" class="meta" href="jobs">jobs</a>
  <span class="meta" id="updated">connecting&hellip;</span>
</header>
<main>
  <section id="panel-throughput">
    <h2>Throughput</h2>
    <div><span class="big" id="completed-per-s">&ndash;</span>
      <span class="unit">tasks/s</span></div>
    <svg class="spark" id="spark-throughput" viewBox="0 0 120 40" preserveAspectRatio="none"></svg>
    <div class="kv">
      <div><span>submitted</span><b id="stat-submitted">&ndash;</b></div>
      <div><span>succeeded</span><b id="stat-succeeded">&ndash;</b></div>
      <div><span>failed</span><b id="stat-failed">&ndash;</b></div>
      <div><span>retries</span><b id="stat-retries">&ndash;</b></div>
    </div>
  </section>
  <section id="panel-queue">
    <h2>Queue</h2>
    <div class="kv">
      <div><span>pending</span><b id="live-pending">&ndash;</b></div>
      <div><span>queued</span><b id="live-queued">&ndash;</b></div>
      <div><span>throttled</span><b id="live-throttled">&ndash;</b></div>
      <div><span>running</span><b id="live-running">&ndash;</b></div>
      <div><span>dispatched</span><b id="live-dispatched">&ndash;</b></div>
      <div><span>jobs active</span><b id="jobs-active">&ndash;</b></div>
      <div><span>by priority</span><b id="queue-priority">&ndash;</b></div>
    </div>
    <svg class="spark" id="spark-queue" viewBox="0 0 120 40" preserveAspectRatio="none"></svg>
  </section>
  <section id="panel-suggestions">
    <h2>Suggestions</h2>
    <ul class="sugg" id="suggestions"><li class="empty">none</li></ul>
  </section>
  <section id="panel-latency" class="wide">
    <h2>Latency (latest tasks per handler)</h2>
    <table><thead><tr><th>handler</th><th>tasks</th><th>wait p50</th><th>wait p95</th>
      <th>wait p99</th><th>run p50</th><th>run p95</th><th>run p99</th><th>run max</th></tr>
    </thead><tbody id="latency"></tbody></table>
  </section>
  <section id="panel-errors">
    <h2>Errors</h2>
    <div class="kv" id="error-kinds"></div>
    <ul class="err" id="errors"></ul>
  </section>
  <section id="panel-agents" class="wide">
    <h2>Agents</h2>
    <table><thead><tr><th>agent</th><th>slots</th><th>in flight</th><th>use</th>
      <th>running</th>
      <th title="CPU of the agent's own processes, % of its machine">agent cpu %</th>
      <th title="CPU of the whole machine, every process">host cpu %</th><th>host mem %</th>
      <th>completed</th><th>heartbeat</th>
      <th>state</th></tr></thead><tbody id="agents"></tbody></table>
  </section>
  <section id="panel-ratekeys">
    <h2>Rate keys</h2>
    <table><thead><tr><th>key</th><th>req/s</th><th>limit</th><th>in flight</th>
      <th>waiting</th><th>429s</th><th>paused</th></tr></thead>
      <tbody id="ratekeys"></tbody></table>
  </section>
  <section id="panel-cache">
    <h2>Result cache</h2>
    <div><span class="big" id="cache-hit-rate">&ndash;</span>
      <span class="unit">hit rate</span></div>
    <div class="kv" id="cache-layers"></div>
  </section>
  <section id="panel-circuits" class="wide">
    <h2>Circuits and quarantines</h2>
    <table><thead><tr><th>circuit</th><th>state</th><th>trips</th><th>open for</th>
      <th>why</th></tr></thead><tbody id="circuits"></tbody></table>
    <ul class="err" id="quarantined"></ul>
  </section>
  <section id="panel-tuner" class="wide">
    <h2>Tuner</h2>
    <div class="kv" id="tuner-state"></div>
    <table><thead><tr><th>#</th><th>knob</th><th>change</th><th>outcome</th><th>before</th>
      <th>after</th><th>why</th></tr></thead><tbody id="tuner-history"></tbody></table>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g,
  (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\\"":"&quot;","'":"&#39;"}[c]));
const num = (v) => (v === null || v === undefined) ? "\\u2013"
  : (typeof v === "number" ? (Number.isInteger(v) ? v.toLocaleString("en-US")
  : v.toLocaleString("en-US", {maximumFractionDigits: 2})) : esc(v));
const secs = (v) => (v === null || v === undefined) ? "\\u2013"
  : (v < 1 ? (v * 1000).toFixed(v < 0.01 ? 2 : 1) + " ms" : v.toFixed(v < 10 ? 2 : 1) + " s");
const dur = (s) => s < 120 ? s.toFixed(0) + " s" : s < 7200 ? (s / 60).toFixed(0) + " min"
  : (s / 3600).toFixed(1) + " h";
function spark(svg, series, colors) {
  const all = series.flat();
  const max = Math.max(1e-9, ...all);
  const n = Math.max(2, ...series.map((s) => s.length));
  svg.innerHTML = series.map((s, i) => {
    const pts = s.map((v, j) => (j * 120 / (n - 1)).toFixed(1) + "," +
      (38 - 36 * v / max).toFixed(1)).join(" ");
    return '<polyline fill="none" stroke-width="1.5" stroke="' + colors[i] +
      '" points="' + pts + '"/>';
  }).join("");
}
function rows(tbody, items, cells, empty) {
  tbody.innerHTML = items.length ? items.map((it) => "<tr>" + cells(it).map((c) =>
    "<td>" + c + "</td>").join("") + "</tr>").join("")
    : '<tr><td class="empty" colspan="10">' + empty + "</td></tr>";
}
function render(s) {
  $("controller-id").textContent = s.controller.id;
  $("uptime").textContent = dur(s.controller.uptime_s);
  const serving = $("serving");
  serving.textContent = s.controller.serving ? "serving" : "not serving";
  serving.className = "badge " + (s.controller.serving ? "ok" : "bad");
  const tr = $("tracing");
  tr.textContent = s.tracing.enabled ? "tracing: " + num(s.tracing.exported) + " spans"
    : "tracing off";
  tr.className = "badge" + (s.tracing.enabled ? " ok" : "");
  $("completed-per-s").textContent = num(s.throughput.completed_per_s);
  for (const k of ["submitted", "succeeded", "failed", "retries"]) {
    $("stat-" + k).textContent = num(s.tasks[k]);
  }
  for (const k of ["pending", "queued", "throttled", "running", "dispatched"]) {
    $("live-" + k).textContent = num(s.tasks.live[k]);
  }
  $("jobs-active").textContent = num(s.jobs_active);
  const prio = Object.entries(s.tasks.queue_by_priority);
  $("queue-priority").textContent = prio.length
    ? prio.map(([p, n]) => p + ":" + n).join(" ") : "\\u2013";
  const ser = s.throughput.series;
  spark($("spark-throughput"), [ser.completed_per_s], ["#5aa9ff"]);
  spark($("spark-queue"), [ser.queued, ser.in_flight, ser.throttled],
    ["#f0b429", "#4cc38a", "#ef5350"]);
  const lat = Object.entries(s.latency.handlers);
  if (lat.length > 1) lat.push(["all", s.latency.all]);
  rows($("latency"), lat, ([h, l]) => [esc(h), num(l.run.n || l.wait.n),
    secs(l.wait.p50), secs(l.wait.p95), secs(l.wait.p99),
    secs(l.run.p50), secs(l.run.p95), secs(l.run.p99), secs(l.run.max)], "no tasks yet");
  rows($("agents"), s.agents, (a) => [esc(a.id), num(a.slots), num(a.in_flight),
    '<span class="bar"><i style="width:' + (100 * a.utilisation).toFixed(0) + '%"></i></span>' +
    (100 * a.utilisation).toFixed(0) + "%", num(a.running), num(a.process_cpu_percent),
    num(a.cpu_percent), num(a.memory_percent), num(a.completed), secs(a.heartbeat_age_s) + " ago",
    a.draining ? '<span class="warning">draining</span>' : "active"], "no agent connected");
  rows($("ratekeys"), s.rate_keys, (k) => [esc(k.key), num(k.paced_rps),
    k.concurrency_limit ? num(k.concurrency_limit) : "\\u2013", num(k.in_flight), num(k.waiting),
    num(k.rate_limited), k.paused_for_s ? secs(k.paused_for_s) : "\\u2013"], "no rate keys in use");
  const c = s.cache;
  $("cache-hit-rate").textContent = c.enabled ? (100 * c.hit_rate).toFixed(1) + "%" : "off";
  const layers = c.enabled ? Object.entries(c.hits).concat([["misses", c.misses],
    ["entries", c.entries], ["MiB", c.bytes / 1048576], ["skipped", c.skipped],
    ["preloads", c.preloads]]) : [];
  $("cache-layers").innerHTML = layers.length ? layers.map(([k, n]) =>
    "<div><span>" + esc(k) + "</span><b>" + num(n) + "</b></div>").join("")
    : '<div class="empty">cache off</div>';
  rows($("circuits"), s.circuits, (k) => [esc(k.key),
    k.state === "closed" ? "closed" : '<span class="warning">' + esc(k.state) + "</span>",
    num(k.trips), k.open_for_s ? secs(k.open_for_s) : "\u2013", esc(k.reason)],
    "no circuit has opened");
  $("quarantined").innerHTML = s.quarantined.map((q) => "<li><b>" + esc(q.agent) + "</b> " +
    esc(q.handler) + '<span class="msg">' + esc(q.reason) + "</span></li>").join("");
  const kinds = Object.entries(s.errors.failures_by_kind).map(([k, n]) => [k + " (failed)", n])
    .concat(Object.entries(s.errors.retries_by_kind).map(([k, n]) => [k + " (retried)", n]));
  $("error-kinds").innerHTML = kinds.length ? kinds.map(([k, n]) =>
    "<div><span>" + esc(k) + "</span><b>" + num(n) + "</b></div>").join("")
    : '<div class="empty">no errors</div>';
  const recent = s.errors.recent.slice(0, 6);
  $("errors").innerHTML = recent.length ? recent.map((e) => "<li><b>" + esc(e.task) +
    "</b> " + esc(e.state) + " " + esc(e.kind) + ' <span class="num">attempt ' +
    num(e.attempt) + '</span><span class="msg">' + esc(e.message) + "</span></li>").join("")
    : '<li class="empty">no recent errors</li>';
  const t = s.tuner;
  $("tuner-state").innerHTML = t ? [["mode", t.mode], ["objective", t.objective],
    ["state", t.converged ? "converged" : "climbing"]].concat(t.knobs.map((k) =>
    [k.name, k.value + " [" + k.floor + ".." + k.ceiling + "]"])).map(([k, v]) =>
    "<div><span>" + esc(k) + "</span><b>" + esc(v) + "</b></div>").join("")
    : '<div class="empty">tuner off</div>';
  rows($("tuner-history"), t ? t.history.slice(-10).reverse() : [], (c) => [num(c.seq),
    esc(c.knob), num(c.old) + " \u2192 " + num(c.new), esc(c.outcome), num(c.before),
    c.after === null ? "\u2013" : num(c.after),
    esc(c.reason + (c.verdict ? "; " + c.verdict : ""))], "no changes yet");
  const sugg = s.suggestions;
  $("suggestions").innerHTML = sugg.length ? sugg.map((g) => '<li><span class="sev ' +
    esc(g.severity) + '">' + esc(g.severity) + "</span><b>" + esc(g.title) + "</b><br>" +
    esc(g.detail) + ' <span class="num">(' + num(g.value) + " vs " + num(g.threshold) +
    ")</span></li>").join("") : '<li class="empty">none: nothing to improve right now</li>';
  document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
  $("updated").textContent = "updated " + new Date(s.controller.time * 1000).toLocaleTimeString();
}
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const auth = token ? {Authorization: "Bearer " + token} : {};
if (token) $("to-jobs").href = "jobs#" + new URLSearchParams({token: token}).toString();
async function poll() {
  try {
    const r = await fetch("api/stats", {cache: "no-store", headers: auth});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
  } catch (e) {
    $("updated").textContent = "controller unreachable (" + e.message + ")";
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body>
</html>
"""
