// drchain dashboard: one WebSocket to the node that served this page, JSON-RPC over it.
// Live: finalized heads and failover events arrive as subscriptions; the views they make
// stale are fetched again (services at most once a second, validators every few seconds,
// a service's timeline when it has a failover event). Nothing polls on a timer.
// Every value from the chain is inserted as text, never as HTML: members choose their own
// endpoints and names.
"use strict";

const state = {
  names: new Map(),      // account -> CN
  services: [],
  timelines: new Map(),  // service -> transitions
  validators: [],
  heads: [],             // recent finalized headers {number, timestamp}
  agent: new Map(),      // service -> this node's agent report
};

// ---- DOM helpers -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") el.className = v; else el.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function badge(text, kind) { return h("span", { class: "badge " + (kind || "") }, text); }
function setText(id, text) { document.getElementById(id).textContent = text; }
function replace(id, node) { document.getElementById(id).replaceChildren(node); }
function name(account) {
  if (!account) return "–";
  const n = state.names.get(account);
  return n || account.slice(0, 10) + "…";
}
function ms(v) { return v === null || v === undefined ? "–" : v < 10000 ? v + " ms" : (v / 1000).toFixed(1) + " s"; }
function utc(t) { return new Date(t).toISOString().replace("T", " ").slice(0, 23); }
function duration(msLeft) {
  const d = msLeft / 86400000;
  if (Math.abs(d) >= 2) return Math.round(d) + " d";
  const hrs = msLeft / 3600000;
  if (Math.abs(hrs) >= 2) return Math.round(hrs) + " h";
  return Math.round(msLeft / 60000) + " min";
}
const roleKind = { active: "ok", standby: "info", promoting: "warn", failed: "bad", fenced: "bad" };
const healthKind = { healthy: "ok", degraded: "warn", failed: "bad" };

// ---- JSON-RPC over WebSocket -------------------------------------------------------------

class Rpc {
  constructor(url, onOpen, onClose) {
    this.url = url; this.onOpen = onOpen; this.onClose = onClose;
    this.nextId = 1; this.pending = new Map(); this.subscriptions = new Map();
    this.retry = 1000;
    this.connect();
  }
  connect() {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => { this.retry = 1000; this.onOpen(); };
    ws.onmessage = (m) => this.receive(m.data);
    ws.onclose = () => {
      for (const p of this.pending.values()) p.reject(new Error("connection closed"));
      this.pending.clear(); this.subscriptions.clear();
      this.onClose();
      setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    };
  }
  receive(text) {
    let msg;
    try { msg = JSON.parse(text); } catch (e) { return; }
    if (msg.id !== undefined && this.pending.has(msg.id)) {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(msg.error.message)); else p.resolve(msg.result);
    } else if (msg.params && this.subscriptions.has(msg.params.subscription)) {
      this.subscriptions.get(msg.params.subscription)(msg.params.result);
    }
  }
  call(method, params) {
    return new Promise((resolve, reject) => {
      if (this.ws.readyState !== WebSocket.OPEN) { reject(new Error("not connected")); return; }
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params: params || [] }));
    });
  }
  async subscribe(method, params, handler) {
    const id = await this.call(method, params);
    this.subscriptions.set(id, handler);
  }
}

// ---- refreshing, throttled ---------------------------------------------------------------

function throttled(fn, gapMs) {
  let last = 0, timer = null;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + gapMs - Date.now());
    timer = setTimeout(async () => {
      timer = null; last = Date.now();
      try { await fn(); } catch (e) { console.warn(e); }
    }, wait);
  };
}

let rpc;

async function loadServices() {
  state.services = await rpc.call("failover_services");
  // This node's own agent (null without one): its lease and hook results are local.
  const agent = await rpc.call("agent_status");
  state.agent = new Map((agent || []).map((r) => [r.service, r]));
  const health = await rpc.call("system_health");
  setText("peers", String(health.peers) + (health.isSyncing ? " (syncing)" : ""));
  renderServices();
}

async function loadTimeline(service) {
  const t = await rpc.call("failover_timeline", [service, 30]);
  state.timelines.set(service, t.transitions);
}

async function loadTimelines() {
  for (const s of state.services) await loadTimeline(s.name);
  renderServices();
}

async function loadMembers() {
  const members = await rpc.call("membership_members");
  state.names = new Map(members.map((m) => [m.account, cn(m.subject)]));
}

function cn(subject) {
  const part = subject.split(",").map((p) => p.trim()).find((p) => p.startsWith("CN="));
  return part ? part.slice(3) : subject;
}

async function loadValidators() {
  state.validators = await rpc.call("membership_validatorActivity");
  renderValidators();
}

const refreshServices = throttled(loadServices, 1000);
const refreshValidators = throttled(loadValidators, 5000);
const refreshTimelines = throttled(async () => { await loadMembers(); await loadTimelines(); }, 200);

function onHead(header) {
  const number = parseInt(header.number, 16);
  state.heads.push({ number, timestamp: header.timestamp });
  if (state.heads.length > 30) state.heads.shift();
  setText("finalized", "#" + number);
  if (state.heads.length > 1) {
    const first = state.heads[0], last = state.heads[state.heads.length - 1];
    const blocks = last.number - first.number;
    if (blocks > 0) setText("block-time", ms(Math.round((last.timestamp - first.timestamp) / blocks)));
  }
  setText("finality", "≈ " + ms(Math.max(0, Date.now() - header.timestamp)));
  refreshServices();
  refreshValidators();
}

function onFailoverEvent() {
  refreshServices();
  refreshTimelines();
}

async function start() {
  setText("connection", "connected");
  document.getElementById("connection").className = "badge ok";
  try {
    setText("chain-name", await rpc.call("system_chain"));
    setText("node-name", await rpc.call("system_name"));
    await loadMembers();
    await loadServices();
    await loadTimelines();
    await loadValidators();
    await rpc.subscribe("chain_subscribeFinalizedHeads", [], onHead);
    await rpc.subscribe("failover_subscribeEvents", [], onFailoverEvent);
  } catch (e) {
    setText("connection", "error: " + e.message);
    document.getElementById("connection").className = "badge bad";
  }
}

function stopped() {
  setText("connection", "disconnected — retrying");
  document.getElementById("connection").className = "badge bad";
}

// ---- rendering ---------------------------------------------------------------------------

function renderServices() {
  if (state.services.length === 0) {
    replace("services", h("p", { class: "muted" }, "No services registered."));
    return;
  }
  const cards = state.services.map(renderService);
  document.getElementById("services").replaceChildren(...cards);
}

function renderService(s) {
  const holder = s.active || (s.promoting && s.promoting.node);
  const phaseKind = s.phase === "active" ? "ok" : s.phase === "promoting" ? "warn" : "bad";
  const title = h("h3", {},
    h("span", { class: "service-name" }, s.name),
    badge(s.phase, phaseKind),
    s.paused_since_block !== null && s.paused_since_block !== undefined
      ? badge("paused since #" + s.paused_since_block, "paused") : null,
    h("span", { class: "facts" },
      "active ", h("strong", { class: "active-node" }, holder ? name(holder) : "none"),
      ` · epoch ${s.epoch} · since #${s.since_block} · heartbeat timeout ${ms(s.config.heartbeat_timeout_ms)} · RPO ${ms(s.config.max_lag_ms)}`));
  const rows = s.nodes.map((n) => {
    const hb = n.heartbeat;
    const isHolder = n.node === holder;
    const leaseLeft = isHolder && hb ? Math.max(0, s.config.heartbeat_timeout_ms - hb.age_ms) : null;
    const lag = n.held_checkpoint === null
      ? (n.data_lag_ms === null ? h("span", { class: "text-bad" }, "none") : "–")
      : n.data_lag_ms === null ? h("span", { class: "text-bad" }, "pruned")
      : h("span", { class: n.data_lag_ms > s.config.max_lag_ms ? "text-bad" : "" }, ms(n.data_lag_ms));
    return h("tr", { "data-node": name(n.node) },
      h("td", {}, name(n.node)),
      h("td", {}, badge(n.role, roleKind[n.role])),
      h("td", {}, hb ? badge(hb.health, healthKind[hb.health]) : "–"),
      h("td", { class: hb && hb.stale ? "text-bad" : "" }, hb ? ms(hb.age_ms) + (hb.stale ? " (stale)" : "") : "never"),
      h("td", { title: "time until the chain finds the holder stale without a new heartbeat" },
        leaseLeft === null ? "–" : h("span", { class: leaseLeft < s.config.heartbeat_timeout_ms / 3 ? "text-warn" : "" }, ms(leaseLeft))),
      h("td", {}, n.held_checkpoint === null ? "–" : String(n.held_checkpoint)),
      h("td", {}, lag),
      h("td", {}, n.endpoint || "–"),
      h("td", { class: "last-hook", title: "hook results are known to each node's own agent: open that node's dashboard for its hooks" },
        lastHook(state.agent && state.agent.get(s.name), n.node)),
      // Why a candidate cannot be elected now (the marks stay on chain after it recovered).
      h("td", {}, n.role === "failed" && n.failed_epoch !== null ? "failed in epoch " + n.failed_epoch
        : n.role === "fenced" && n.fenced_epoch !== null ? "fenced since epoch " + n.fenced_epoch : ""));
  });
  const table = h("table", {},
    h("thead", {}, h("tr", {}, ["node", "role", "health", "heartbeat age", "stale in", "checkpoint", "data lag", "endpoint", "hooks (this node)", "marks"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
  return h("div", { class: "card service", "data-service": s.name }, title, table, renderTimeline(s.name));
}

// This node's hooks for the service, on its own row: the last run of each, newest first.
function lastHook(report, node) {
  if (!report || report.node !== node) return "";
  const parts = [];
  if (report.hook_running) parts.push(report.hook_running + " running");
  for (const last of report.last_hooks.slice().reverse()) {
    const ago = Math.max(0, Date.now() - last.finished_at_ms);
    const text = `${last.hook} ${last.outcome.replace("_", " ")} (epoch ${last.epoch}, ${ms(last.took_ms)}, ${ms(ago)} ago)`;
    parts.push(h("div", { class: last.outcome === "succeeded" ? "" : "text-bad" }, text));
  }
  if (report.hook_failures > 0) parts.push(h("span", { class: "text-bad" }, ` (${report.hook_failures} failed since start)`));
  if (report.serving) parts.push(h("div", {}, `serving, lease ${ms(report.lease_left_ms)} left`));
  return parts.length ? h("span", {}, parts) : "none yet";
}

function describe(t) {
  if (t.kind === "paused" || t.kind === "resumed") return t.kind;
  if (t.kind === "vacant") return "vacant (" + (t.reason || "") + ")";
  if (t.reason === "switchover") return "switchover";
  return t.from ? "failover" : "elected";
}

function renderTimeline(service) {
  const transitions = state.timelines.get(service) || [];
  const wrap = h("div", { class: "timeline" });
  if (transitions.length === 0) {
    wrap.append(h("p", { class: "muted" }, "No transitions yet."));
    return wrap;
  }
  const first = transitions[0].timestamp;
  const last = Math.max(transitions[transitions.length - 1].timestamp, first + 1);
  const now = Math.max(Date.now(), last);
  const span = now - first || 1;
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("viewBox", "0 0 1000 46");
  svg.setAttribute("preserveAspectRatio", "none");
  const line = document.createElementNS(svgNs, "line");
  for (const [k, v] of Object.entries({ x1: 10, x2: 990, y1: 18, y2: 18, class: "axis" })) line.setAttribute(k, v);
  svg.append(line);
  for (const t of transitions) {
    const x = 10 + 980 * (t.timestamp - first) / span;
    const c = document.createElementNS(svgNs, "circle");
    const kind = describe(t).split(" ")[0];
    for (const [k, v] of Object.entries({ cx: x, cy: 18, r: 6, class: kind })) c.setAttribute(k, v);
    const tip = document.createElementNS(svgNs, "title");
    tip.textContent = `${utc(t.timestamp)} ${describe(t)} ${name(t.from)} → ${name(t.to)}`;
    c.append(tip);
    svg.append(c);
  }
  for (const [x, label, anchor] of [[10, utc(first), "start"], [990, "now", "end"]]) {
    const text = document.createElementNS(svgNs, "text");
    for (const [k, v] of Object.entries({ x, y: 40, "text-anchor": anchor })) text.setAttribute(k, v);
    text.textContent = label;
    svg.append(text);
  }
  wrap.append(svg);
  const rows = transitions.slice().reverse().map((t) => h("tr", { class: "transition" },
    h("td", {}, utc(t.timestamp)),
    h("td", {}, "#" + t.block),
    h("td", {}, t.epoch === null ? "–" : String(t.epoch)),
    h("td", {}, describe(t)),
    h("td", {}, t.reason || "–"),
    h("td", {}, name(t.from) + " → " + name(t.to)),
    h("td", { title: "heartbeats stopped → elected" }, ms(t.silent_ms)),
    h("td", { title: "elected → promoted" }, ms(t.promoted_after_ms)),
    h("td", {}, (t.outcome || "").replace("_", " ") + (t.data_loss_ms !== null ? ` (lost ${ms(t.data_loss_ms)} of data)` : ""))));
  wrap.append(h("details", { open: "" }, h("summary", {}, "Failover timeline (newest first)"),
    h("table", {}, h("thead", {}, h("tr", {}, ["time", "block", "epoch", "event", "cause", "from → to", "silent", "promoted in", "outcome"].map((x) => h("th", {}, x)))),
      h("tbody", {}, rows))));
  return wrap;
}

function renderValidators() {
  const now = state.heads.length ? state.heads[state.heads.length - 1].timestamp : Date.now();
  const rows = state.validators.map((v) => {
    const left = v.admitted_until - now;
    return h("tr", { "data-validator": v.name },
      h("td", {}, v.name || name(v.account)),
      h("td", {}, badge(v.online ? "online" : "offline", v.online ? "ok" : "bad")),
      h("td", {}, v.last_signed === null ? "–" : "#" + v.last_signed),
      h("td", {}, `${v.signed} of ${v.window}`),
      h("td", {}, v.missed_turns.length ? v.missed_turns.map((m) => "#" + m).join(", ") : "none"),
      h("td", { class: left < 14 * 86400000 ? "text-bad" : "" }, left > 0 ? "in " + duration(left) : "expired"));
  });
  replace("validators", h("div", { class: "card" }, h("table", {},
    h("thead", {}, h("tr", {}, ["validator", "status", "last vote", "precommits in recent blocks", "missed proposer turns", "certificate ends"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows))));
}

const scheme = location.protocol === "https:" ? "wss" : "ws";
rpc = new Rpc(`${scheme}://${location.host}/`, start, stopped);
