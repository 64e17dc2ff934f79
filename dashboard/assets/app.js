// Prism dashboard: fills each page from /api/v0 and refreshes it every 2 s.
// Plain JavaScript, no build step. Every value from the cluster goes into
// the page through textContent (never innerHTML), so names cannot inject.
"use strict";

const REFRESH_MS = 2000;
const body = document.body;
const page = body.dataset.page;
const content = document.getElementById("content");

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(path, opts) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, opts || {}));
  if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); throw new Error("unauthorized"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

const short = (id) => (id ? String(id).slice(0, 12) : "");
const cls = (name) => (name ? String(name).split("::").pop() : "");
const fmtBytes = (n) => {
  if (n === null || n === undefined) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; let x = Number(n);
  while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
  return (i ? x.toFixed(1) : x) + " " + u[i];
};
const fmtTime = (us) => (us ? new Date(us / 1000).toLocaleTimeString() : "");
const fmtMs = (ms) => (ms ? new Date(ms).toLocaleString() : "");
const dur = (a, b) => (a && b ? ((b - a) / 1000).toFixed(1) + " ms" : "");

function bar(used, total, label) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  return el("div", { class: "bar", title: label + ": " + used + " / " + total },
    el("div", { class: "fill", style: "width:" + pct.toFixed(1) + "%" }),
    el("span", {}, label + " " + (Math.round(used * 100) / 100) + " / " + (Math.round(total * 100) / 100)));
}

function table(columns, rows) {
  const head = el("tr", {}, columns.map((c) => el("th", {}, c[0])));
  const lines = rows.map((r) => el("tr", {}, columns.map((c) => {
    const v = c[1](r);
    return el("td", {}, v instanceof Node ? v : (v === null || v === undefined ? "" : String(v)));
  })));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, lines));
}

function counts(title, map) {
  const items = Object.entries(map || {});
  return el("div", { class: "card" }, el("h3", {}, title),
    items.length ? el("ul", { class: "counts" }, items.map(([k, v]) => el("li", {}, el("b", {}, v), " " + k)))
      : el("p", { class: "muted" }, "none"));
}

// --- paged tables (jobs, actors, tasks, objects, groups, workers) ---------

const state = { offset: 0, limit: 100, filter: "", stateFilter: "" };

function pager(total) {
  const from = total ? state.offset + 1 : 0;
  const to = Math.min(total, state.offset + state.limit);
  return el("div", { class: "pager" },
    el("button", { onclick: () => { state.offset = Math.max(0, state.offset - state.limit); refresh(); }, ...(state.offset === 0 ? { disabled: "" } : {}) }, "‹ prev"),
    el("span", {}, ` ${from}–${to} of ${total} `),
    el("button", { onclick: () => { state.offset += state.limit; refresh(); }, ...(to >= total ? { disabled: "" } : {}) }, "next ›"));
}

function controls(states) {
  const sel = el("select", { onchange: (e) => { state.stateFilter = e.target.value; state.offset = 0; refresh(); } },
    el("option", { value: "" }, "any state"), states.map((s) => el("option", s === state.stateFilter ? { value: s, selected: "" } : { value: s }, s)));
  const input = el("input", { placeholder: "name filter", value: state.filter, onchange: (e) => { state.filter = e.target.value; state.offset = 0; refresh(); } });
  return el("div", { class: "controls" }, sel, input);
}

function query() {
  const q = new URLSearchParams({ limit: state.limit, offset: state.offset });
  if (state.stateFilter) q.set("state", state.stateFilter);
  if (state.filter) q.set("name", state.filter);
  for (const k of ["job", "node"]) if (body.dataset[k]) q.set(k, body.dataset[k]);
  return q.toString();
}

const TABLES = {
  jobs: {
    states: ["pending", "running", "succeeded", "failed", "stopped"],
    columns: [["Job", (r) => r.job_id], ["State", (r) => r.state], ["Entrypoint", (r) => r.entrypoint],
      ["Started", (r) => fmtMs(r.start_ms)], ["Ended", (r) => fmtMs(r.end_ms)], ["Exit", (r) => r.exit_code],
      ["", (r) => (window.canStop && r.state === "running" && r.submitted
        ? el("button", { onclick: () => api("/api/v0/jobs/" + r.job_id + "/stop", { method: "POST" }).then(refresh, alert) }, "stop") : "")]],
  },
  actors: {
    states: ["pending", "alive", "restarting", "dead"],
    columns: [["Actor", (r) => short(r.actor_id)], ["Class", (r) => cls(r.class)], ["Name", (r) => r.name],
      ["State", (r) => r.state], ["Node", (r) => (r.node_id ? el("a", { href: "/nodes/" + r.node_id }, short(r.node_id)) : "")],
      ["Restarts", (r) => r.restarts], ["Job", (r) => short(r.job_id)], ["Reason", (r) => r.death_reason]],
  },
  tasks: {
    states: ["queued", "running", "infeasible", "finished", "failed"],
    columns: [["Task", (r) => short(r.task_id)], ["Name", (r) => r.name], ["Kind", (r) => r.kind], ["State", (r) => r.state],
      ["Node", (r) => el("a", { href: "/nodes/" + r.node_id }, short(r.node_id))],
      ["Worker", (r) => (r.worker_pid ? el("a", { href: "/logs?node=" + r.node_id + "&pid=" + r.worker_pid }, r.worker_pid) : "")],
      ["Started", (r) => fmtTime(r.started_us)], ["Run time", (r) => dur(r.started_us, r.ended_us)], ["Error", (r) => r.error]],
  },
  objects: {
    states: [],
    columns: [["Object", (r) => short(r.object_id)], ["Size", (r) => fmtBytes(r.size)], ["Sealed", (r) => r.sealed],
      ["Pinned", (r) => r.pinned], ["Spilled", (r) => r.spilled], ["Refs", (r) => r.refs], ["Node", (r) => short(r.node_id)]],
  },
  placement_groups: {
    states: ["pending", "created", "removed", "rescheduling"],
    columns: [["Group", (r) => short(r.pg)], ["Name", (r) => r.name], ["State", (r) => r.state], ["Strategy", (r) => JSON.stringify(r.strategy)],
      ["Bundles", (r) => (r.bundles || []).length], ["Nodes", (r) => (r.nodes || []).map((n) => (n ? short(n) : "-")).join(", ")], ["Reason", (r) => r.reason]],
  },
  workers: {
    states: ["starting", "idle", "busy", "actor"],
    columns: [["Node", (r) => el("a", { href: "/nodes/" + r.node_id }, short(r.node_id))], ["Worker", (r) => r.worker_id],
      ["PID", (r) => r.pid], ["State", (r) => r.state], ["Job", (r) => short(r.job_id)], ["Actor", (r) => short(r.actor_id)],
      ["Log", (r) => (r.pid ? el("a", { href: "/logs?node=" + r.node_id + "&pid=" + r.pid }, "log") : "")]],
  },
};

async function renderTable(name) {
  const t = TABLES[name];
  const p = await api("/api/v0/" + name + "?" + query());
  const parts = [controls(t.states), pager(p.total), table(t.columns, p.rows)];
  if (name === "tasks") parts.unshift(await taskSummary());
  return parts;
}

// --- overview --------------------------------------------------------------

async function renderOverview() {
  const s = await api("/api/v0/summary");
  const res = Object.keys(s.resources_total).sort();
  const gib = (r) => (r === "memory" || r === "object_store_memory" ? 2 ** 30 : 1);
  const totals = el("div", { class: "card" }, el("h3", {}, "Cluster"),
    res.map((r) => bar((s.resources_total[r] - (s.resources_available[r] || 0)) / gib(r), s.resources_total[r] / gib(r), gib(r) > 1 ? r + " GiB" : r)));
  const nodes = table([
    ["Node", (n) => el("a", { href: "/nodes/" + n.node_id }, short(n.node_id))],
    ["Name", (n) => n.name + (n.is_head ? " (head)" : "")], ["State", (n) => n.state], ["Address", (n) => n.address],
    ["CPU", (n) => bar(used(n, "CPU"), n.resources_total.CPU || 0, "CPU")],
    ["GPU", (n) => (n.resources_total.GPU ? bar(used(n, "GPU"), n.resources_total.GPU, "GPU") : "")],
    ["Memory", (n) => bar(used(n, "memory") / 2 ** 30, (n.resources_total.memory || 0) / 2 ** 30, "GiB")],
    ["Object store", (n) => bar(used(n, "object_store_memory") / 2 ** 30, (n.resources_total.object_store_memory || 0) / 2 ** 30, "GiB")],
    ["Heartbeat", (n) => n.last_heartbeat_ms_ago + " ms ago"],
  ], s.nodes);
  const demand = s.demand.length
    ? table([["Node", (d) => short(d.node_id)], ["Shape", (d) => JSON.stringify(d.shape)], ["Count", (d) => d.count], ["Infeasible", (d) => d.infeasible || ""]], s.demand)
    : el("p", { class: "muted" }, "No pending or infeasible demand.");
  return [
    el("p", { class: "muted" }, "Cluster " + s.cluster_id + " · head " + s.head_address),
    el("div", { class: "cards" }, totals, counts("Jobs", s.jobs), counts("Actors", s.actors), counts("Tasks", s.tasks), counts("Placement groups", s.placement_groups)),
    el("h2", {}, "Nodes"), nodes, el("h2", {}, "Demand"), demand,
  ];
}

function used(n, r) {
  return (n.resources_total[r] || 0) - (n.resources_available[r] || 0);
}

// --- tasks: counts and a timeline -------------------------------------------

async function taskSummary() {
  const s = await api("/api/v0/summary");
  const trace = await api("/api/v0/timeline" + (body.dataset.job ? "?job=" + body.dataset.job : ""));
  return el("div", {}, el("div", { class: "cards" }, counts("Tasks by state", s.tasks)), el("h2", {}, "Timeline"), timeline(trace));
}

function timeline(events) {
  const runs = events.filter((e) => e.ph === "X").slice(-2000);
  if (!runs.length) return el("p", { class: "muted" }, "No finished tasks yet.");
  const t0 = Math.min(...runs.map((e) => e.ts));
  const t1 = Math.max(...runs.map((e) => e.ts + e.dur));
  const lanes = [...new Set(runs.map((e) => e.pid + ":" + e.tid))];
  const W = 1000, H = 14, span = Math.max(1, t1 - t0);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${lanes.length * H + 4}`);
  svg.setAttribute("class", "timeline");
  for (const e of runs) {
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", ((e.ts - t0) / span) * W);
    r.setAttribute("y", lanes.indexOf(e.pid + ":" + e.tid) * H + 2);
    r.setAttribute("width", Math.max(1, (e.dur / span) * W));
    r.setAttribute("height", H - 3);
    r.setAttribute("class", e.args && e.args.error ? "failed" : e.cat);
    const title = document.createElementNS(ns, "title");
    title.textContent = `${e.name} (${(e.dur / 1000).toFixed(2)} ms) worker ${e.tid}`;
    r.append(title);
    svg.append(r);
  }
  return el("div", {}, svg, el("p", { class: "muted" }, `${runs.length} runs over ${(span / 1e6).toFixed(2)} s; one lane per worker. Download: `,
    el("a", { href: "/api/v0/timeline", download: "timeline.json" }, "Chrome trace")));
}

// --- node detail and logs ----------------------------------------------------

async function renderNode() {
  const id = body.dataset.node;
  const nodes = await api("/api/v0/nodes?node_id=" + encodeURIComponent(id) + "&limit=1");
  if (!nodes.rows.length) return [el("p", { class: "error" }, "No node " + id)];
  const n = nodes.rows[0];
  const workers = await api("/api/v0/workers?node_id=" + encodeURIComponent(n.node_id) + "&limit=500");
  return [
    el("p", {}, `${n.node_id} · ${n.name} · ${n.state} · ${n.address} · pid ${n.pid}` + (n.death_reason ? " · " + n.death_reason : "")),
    el("div", { class: "card" }, Object.keys(n.resources_total).sort().map((r) => bar(used(n, r), n.resources_total[r], r))),
    el("h2", {}, "Workers"), table(TABLES.workers.columns, workers.rows),
  ];
}

let logOffset = 0;
let logText = "";
async function renderLog() {
  const { node, pid } = body.dataset;
  for (;;) {
    const c = await api(`/api/v0/logs?node=${encodeURIComponent(node)}&pid=${encodeURIComponent(pid)}&offset=${logOffset}`);
    logText += c.data;
    const more = c.next > logOffset;
    logOffset = c.next;
    if (!more) break;
  }
  return [el("p", { class: "muted" }, `Worker ${pid} on node ${short(node)} (stdout and stderr).`), el("pre", { class: "log" }, logText || "(empty)")];
}

// --- training runs: one line chart per metric ---------------------------------

function chart(title, xs, ys) {
  const ns = "http://www.w3.org/2000/svg";
  const W = 460, H = 180, P = 52;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => P + ((x - x0) / Math.max(1e-12, x1 - x0)) * (W - P - 8);
  const sy = (y) => H - P + 8 - ((y - y0) / Math.max(1e-12, y1 - y0)) * (H - P - 8);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", xs.map((x, i) => sx(x).toFixed(1) + "," + sy(ys[i]).toFixed(1)).join(" "));
  svg.append(line);
  for (const [x, y, t, anchor] of [[P - 4, 12, y1.toPrecision(4), "end"], [P - 4, H - P + 8, y0.toPrecision(4), "end"],
    [P, H - 6, "step " + x0, "start"], [W - 8, H - 6, "step " + x1, "end"]]) {
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", x); label.setAttribute("y", y); label.setAttribute("text-anchor", anchor);
    label.textContent = t;
    svg.append(label);
  }
  return el("div", { class: "card" }, el("h3", {}, title), svg);
}

async function renderTraining() {
  const runs = await api("/api/v0/runs?limit=50");
  if (!runs.rows.length) return [el("p", { class: "muted" }, "No training runs yet. Every DdpTrainer run reports its steps here; other loops can call prism::report_run.")];
  const pick = body.dataset.run || runs.rows[0].run_id;
  const list = table([
    ["Run", (r) => el("a", { href: "/training?run=" + encodeURIComponent(r.run_id) }, r.run_id)], ["Name", (r) => r.name],
    ["Job", (r) => short(r.job_id)], ["Steps", (r) => r.points], ["Last step", (r) => r.last_step],
    ["Last values", (r) => r.last_values.map(([k, v]) => k + " " + Number(v).toPrecision(4)).join(", ")],
    ["Updated", (r) => fmtMs(r.updated_ms)]], runs.rows);
  const run = await api("/api/v0/runs/" + encodeURIComponent(pick));
  const names = [...new Set(run.points.flatMap((p) => p.values.map(([k]) => k)))];
  const charts = names.map((n) => {
    const pts = run.points.filter((p) => p.values.some(([k]) => k === n));
    return chart(n, pts.map((p) => p.step), pts.map((p) => p.values.find(([k]) => k === n)[1]));
  });
  return [list, el("h2", {}, "Run " + run.run.run_id), el("div", { class: "cards" }, charts)];
}

// --- the model registry: models, then one model's versions, cards, history --

const metricsText = (ms) => (ms || []).map(([k, v]) => k + " " + Number(v).toPrecision(4)).join(", ");

async function renderModels() {
  const models = await api("/api/v0/models?limit=100");
  if (!models.rows.length) return [el("p", { class: "muted" }, "No models registered yet (or none in your namespaces). A version is made from a training run: prism models register NAME --run RUN.")];
  // Names are per namespace: a model is picked by both.
  const asked = body.dataset.model, askedNs = body.dataset.namespace;
  const pick = models.rows.find((m) => m.name === asked && (!askedNs || m.namespace === askedNs)) || models.rows[0];
  const href = (m) => "/models?model=" + encodeURIComponent(m.name) + "&namespace=" + encodeURIComponent(m.namespace);
  const list = table([
    ["Model", (m) => el("a", { href: href(m) }, m.name)], ["Namespace", (m) => m.namespace],
    ["Versions", (m) => m.versions], ["Aliases", (m) => m.aliases.join(" ")],
    ["Latest metrics", (m) => metricsText(m.latest_metrics)], ["Updated", (m) => fmtMs(m.updated_ms)]], models.rows);
  const m = await api("/api/v0/models/" + encodeURIComponent(pick.name) + "?namespace=" + encodeURIComponent(pick.namespace));
  const aliasesOf = (n) => m.aliases.filter(([, v]) => v === n).map(([a]) => a).join(", ");
  const newest = m.versions.slice().reverse();
  const versions = table([
    ["Version", (v) => "v" + v.version], ["Aliases", (v) => aliasesOf(v.version)],
    ["Run", (v) => el("a", { href: "/training?run=" + encodeURIComponent(v.run_id) }, v.run_id)],
    ["Metrics", (v) => metricsText(v.metrics)], ["By", (v) => v.created_by], ["Registered", (v) => fmtMs(v.created_ms)],
    ["Weights", (v) => v.checkpoint]], newest);
  const cards = newest.filter((v) => v.card).map((v) => el("div", { class: "card" }, el("h3", {}, "v" + v.version + " model card"), el("pre", {}, v.card)));
  const history = table([["When", (e) => fmtMs(e.at_ms)], ["Who", (e) => e.who], ["What", (e) => e.what]], m.history.slice().reverse());
  const found = asked && pick.name === asked && (!askedNs || pick.namespace === askedNs);
  const missing = asked && !found ? el("p", { class: "error" }, "No model " + asked + (askedNs ? " in namespace " + askedNs : "") + " among those you may see.") : null;
  return [list, missing, el("h2", {}, "Model " + m.name + " (namespace " + m.namespace + ")"), versions,
    el("div", { class: "cards" }, cards), el("h2", {}, "History"), history];
}

// --- serving: each namespace's applications, deployments and replicas --------

const num = (x, digits) => (x === null || x === undefined ? "" : Number(x).toFixed(digits));

async function renderServe() {
  const s = await api("/api/v0/serve");
  if (!s.namespaces.length) return [el("p", { class: "muted" }, "Nothing is served (or nothing in your namespaces). Start with prism serve deploy serve.yaml.")];
  const parts = [];
  for (const ns of s.namespaces) {
    try { parts.push(...serveNamespace(ns)); } catch (e) {
      // One namespace's malformed report spoils its own section only.
      parts.push(el("h2", {}, "Namespace " + ns.namespace), el("p", { class: "error" }, "Cannot show its report: " + e.message));
    }
  }
  return parts;
}

function serveNamespace(ns) {
  const parts = [];
  const st = ns.status || {};
  const proxies = (st.proxies || []).map((p) => p.address).join(", ") || "none";
  const when = "reported " + ns.age_s + " s ago" + (ns.stale ? ": its controller no longer reports" : "");
  parts.push(el("h2", {}, "Namespace " + ns.namespace),
    el("p", { class: ns.stale ? "error" : "muted" }, "HTTP proxy " + proxies + " · proxy restarts " + (st.proxy_restarts || 0) + " · " + when));
  const deps = st.deployments || [];
  parts.push(table([
    ["Application", (d) => d.application], ["Deployment", (d) => d.deployment], ["Route", (d) => d.route_prefix],
    ["Model", (d) => d.model], ["Version", (d) => d.version_label || "v" + d.version],
    ["Replicas", (d) => (d.replicas || []).length + " / " + d.target_replicas + (d.starting ? " (" + d.starting + " starting)" : "")],
    ["Requests/s", (d) => num(d.window && d.window.rate, 1)],
    ["p50 / p99", (d) => (d.window ? num(d.window.p50_ms, 1) + " / " + num(d.window.p99_ms, 1) + " ms" : "")],
    ["Errors", (d) => (d.window ? d.window.errors : "")],
    ["Rollout", (d) => (d.rollout ? d.rollout.phase + " to " + d.rollout.to + " at " + d.rollout.weight + "%" : "")],
    ["Drift", (d) => num(d.drift_score, 3)], ["Last error", (d) => d.last_error || ""]], deps));
  const reps = deps.flatMap((d) => (d.replicas || []).map((r) => Object.assign({ deployment: d.deployment }, r)));
  if (reps.length) parts.push(el("h3", {}, "Replicas"), table([
    ["Deployment", (r) => r.deployment], ["Actor", (r) => short(r.actor_id)], ["Version", (r) => r.version], ["Pid", (r) => r.pid],
    ["Ongoing", (r) => r.ongoing], ["Requests", (r) => r.requests], ["Errors", (r) => r.errors],
    ["Mean latency", (r) => num(r.mean_latency_us / 1000, 2) + " ms"], ["Drift PSI", (r) => num(r.drift_psi, 3)]], reps));
  return parts;
}

// --- refresh loop ------------------------------------------------------------

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  const live = document.getElementById("live");
  try {
    let parts;
    if (page === "") parts = await renderOverview();
    else if (TABLES[page]) parts = await renderTable(page);
    else if (page === "node") parts = await renderNode();
    else if (page === "log") parts = await renderLog();
    else if (page === "training") parts = await renderTraining();
    else if (page === "models") parts = await renderModels();
    else if (page === "serve") parts = await renderServe();
    else parts = [el("p", {}, "No such page.")];
    const focused = document.activeElement && document.activeElement.tagName === "INPUT";
    if (!focused) content.replaceChildren(...parts);
    live.className = "ok";
  } catch (e) {
    live.className = "down";
    if (String(e.message) !== "unauthorized") content.replaceChildren(el("p", { class: "error" }, "Cannot load: " + e.message));
  } finally {
    busy = false;
  }
}

api("/api/v0/whoami").then((w) => { window.canStop = w.can_stop; }, () => {}).finally(() => {
  refresh();
  setInterval(refresh, REFRESH_MS);
});
