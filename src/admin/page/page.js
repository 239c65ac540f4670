// pinion's status page: polls /status, keeps the last five minutes of samples in memory and
// redraws with createElement/textContent only (no markup is ever built from data).
"use strict";

const POLL_MS = 5000;
const WINDOW_MS = 5 * 60 * 1000;
const history = new Map(); // "pool\u0000server" -> [{t, requests, errors, hist}]
const opened = new Map(); // pool name -> whether the operator opened (true) or closed it
let last = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function days(d) {
  if (d === null || d === undefined) return null;
  return d < 7 ? "bad" : d < 30 ? "warn" : "";
}

function expiryCell(d, when) {
  if (d === null || d === undefined) return el("td", { class: "num" }, "–");
  const text = d < 0 ? "expired " + Math.ceil(-d) + " d ago" : Math.floor(d) + " d";
  return el("td", { class: "num expiry " + days(d), title: when || "" }, text);
}

function rate(n) {
  if (n === null) return "–";
  return n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(1) : n.toFixed(2);
}

function ms(s) {
  if (s === null) return "–";
  return s >= 1 ? s.toFixed(1) + " s" : (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms";
}

// The bucket bound below which `q` of the window's responses fell (an upper estimate).
function quantile(bounds, hist, q) {
  const total = hist.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i];
    if (seen >= q * total) return i < bounds.length ? bounds[i] : Infinity;
  }
  return null;
}

function record(key, now, s) {
  let h = history.get(key);
  if (!h) history.set(key, (h = []));
  if (h.length && s.requests < h[h.length - 1].requests) h.length = 0; // a new server, same name
  h.push({ t: now, requests: s.requests, errors: s.errors, hist: s.latency_histogram || [] });
  while (h.length > 2 && now - h[0].t > WINDOW_MS) h.shift();
  return h;
}

// requests/s, error share and latency quantiles over the samples in `h`.
function figures(h, bounds) {
  if (h.length < 2) return { rps: null, err: null, p50: null, p99: null };
  const a = h[0], b = h[h.length - 1];
  const secs = (b.t - a.t) / 1000;
  const n = b.requests - a.requests;
  const hist = b.hist.map((v, i) => v - (a.hist[i] || 0));
  return {
    rps: secs > 0 ? n / secs : null,
    err: n > 0 ? (b.errors - a.errors) / n : null,
    p50: quantile(bounds, hist, 0.5),
    p99: quantile(bounds, hist, 0.99),
  };
}

function sparkline(h) {
  const s = svg("svg", { class: "spark", viewBox: "0 0 80 20", "aria-hidden": "true" });
  if (h.length < 3) return s;
  const rates = [], errs = [];
  for (let i = 1; i < h.length; i++) {
    const dt = (h[i].t - h[i - 1].t) / 1000 || 1;
    rates.push((h[i].requests - h[i - 1].requests) / dt);
    errs.push((h[i].errors - h[i - 1].errors) / dt);
  }
  const max = Math.max(...rates, 0.001);
  const line = (v) => v.map((r, i) => ((i * 80) / Math.max(v.length - 1, 1)).toFixed(1) + "," +
    (19 - (r / max) * 18).toFixed(1)).join(" ");
  s.append(svg("polyline", { points: line(rates) }));
  if (errs.some((e) => e > 0)) s.append(svg("polyline", { points: line(errs), class: "err" }));
  return s;
}

function whitelisted(pool, s) {
  if (!pool.tls) return el("td", {}, "plain HTTP");
  if (s.pin_match) return el("td", { class: "listed yes" }, "yes (" + s.pin_match.scope + ")");
  if (s.presented_pin) return el("td", { class: "listed no" }, "no");
  return el("td", { class: "muted" }, "–");
}

function serverRow(pool, s, now, bounds) {
  const key = pool.name + "\u0000" + s.server;
  const h = history.get(key) || [];
  const f = figures(h, bounds);
  const warnings = (s.pin_warnings || []).map((w) => w.message).join("; ");
  const parts = [s.reason];
  if (s.pin_refused && !(s.reason || "").includes(s.pin_refused)) parts.push(s.pin_refused);
  const reason = parts.concat(warnings).filter(Boolean).join(" — ");
  return el("tr", { class: "server", "data-pool": pool.name, "data-server": s.server },
    el("td", { class: "mono name" }, s.server),
    el("td", { class: "health " + (s.healthy ? "ok" : "bad") }, s.healthy ? "up" : "DOWN"),
    el("td", { class: "reason" }, reason),
    el("td", { class: "mono pin" }, s.presented_pin || "–"),
    whitelisted(pool, s),
    expiryCell(s.certificate_expiry_days, s.certificate_expires),
    el("td", { class: "num in-flight" }, s.in_flight),
    el("td", { class: "num requests" }, s.requests),
    el("td", { class: "num rps" }, rate(f.rps)),
    el("td", { class: "num error-rate" }, f.err === null ? "–" : (f.err * 100).toFixed(1) + " %"),
    el("td", { class: "hide-narrow" }, sparkline(h)),
    el("td", { class: "num p50" }, ms(f.p50)),
    el("td", { class: "num p99" }, ms(f.p99)));
}

const SERVER_HEAD = ["server", "health", "reason", "presented pin", "whitelisted", "cert expiry",
  "in flight", "requests", "req/s", "errors", "last 5 min", "p50", "p99"];

function head(names) {
  return el("tr", {}, ...names.map((n) => el("th", n === "last 5 min" ? { class: "hide-narrow" } : {}, n)));
}

function poolProblem(p) {
  return p.servers.length === 0 || p.healthy_servers < p.servers.length ||
    p.servers.some((s) => (s.pin_warnings || []).length || (days(s.certificate_expiry_days) || "") !== "");
}

function poolBlock(p, now, bounds, many) {
  const problem = poolProblem(p);
  const d = el("details", { class: "pool" + (problem ? " problem" : ""), "data-pool": p.name });
  const want = opened.has(p.name) ? opened.get(p.name) : problem || !many;
  d.open = want;
  d.addEventListener("toggle", () => {
    if (d.open === want) return; // the state this render gave it, not the operator's click
    opened.set(p.name, d.open);
    if (d.open && last) render(last);
  });
  const out = p.healthy_servers === 0;
  const expiring = p.servers.map((s) => s.certificate_expiry_days).filter((x) => x !== null && x !== undefined);
  const soonest = expiring.length ? Math.min(...expiring) : null;
  d.append(el("summary", {},
    el("span", { class: "pool-name" }, p.name),
    el("span", { class: "badge " + (out ? "bad" : p.healthy_servers < p.servers.length ? "warn" : "ok") },
      p.healthy_servers + "/" + p.servers.length + " healthy"),
    p.tls ? el("span", { class: "muted" }, "TLS, pins " + p.pin_mode + ", " + p.pins.length + " pin(s)") :
      el("span", { class: "muted" }, "plain HTTP"),
    soonest !== null && days(soonest) ? el("span", { class: "badge " + days(soonest) },
      "certificate expires in " + Math.floor(soonest) + " d") : null,
    p.unlisted_keys && p.unlisted_keys.keys.length ?
      el("span", { class: "badge warn" }, p.unlisted_keys.keys.length + " unlisted key(s) seen") : null,
    ...(p.names || []).filter((n) => !n.resolving).map((n) =>
      el("span", { class: "badge bad" }, n.name + " not resolving: " + (n.error || "no address")))));
  if (!d.open) return d;
  const table = el("table", {}, head(SERVER_HEAD));
  for (const s of p.servers) table.append(serverRow(p, s, now, bounds));
  d.append(el("div", { class: "scroll" }, table));
  return d;
}

function listeners(doc) {
  const t = document.getElementById("listeners");
  t.replaceChildren(head(["listener", "binds", "TLS", "certificates (days to expiry)"]));
  for (const l of doc.listeners || []) {
    const certs = el("td", {});
    for (const c of (l.tls && l.tls.certificates) || []) {
      certs.append(el("div", {}, el("span", { class: "mono" }, (c.names || []).join(", ") || c.file), " ",
        el("span", { class: "expiry " + (days(c.expiry_days) || "") },
          c.expiry_days === null ? "?" : Math.floor(c.expiry_days) + " d")));
    }
    const tls = l.tls ? "TLS " + l.tls.min_version + "–" + l.tls.max_version + (l.tls.http2 ? ", h2" : "") +
      (l.tls.client_auth ? ", client certificates" : "") :
      l.redirect_to_https ? "HTTP → HTTPS :" + l.redirect_to_https : "plain HTTP";
    t.append(el("tr", {}, el("td", {}, l.name), el("td", { class: "mono" }, l.binds.join(" ")),
      el("td", {}, tls + (l.proxy_protocol ? ", PROXY protocol" : "")), certs));
  }
}

function routes(doc) {
  const t = document.getElementById("routes");
  t.replaceChildren(head(["route", "listeners", "hosts", "paths", "to"]));
  for (const r of doc.routes || []) {
    t.append(el("tr", {}, el("td", {}, r.name), el("td", {}, r.listeners ? r.listeners.join(", ") : "all"),
      el("td", { class: "mono" }, r.hosts.length ? r.hosts.join(" ") : "any"),
      el("td", { class: "mono" }, r.paths.length ? r.paths.join(" ") : "any"),
      el("td", {}, r.pool ? "pool " + r.pool : r.redirect ? r.redirect.status + " → " + r.redirect.to : "–")));
  }
}

function matches(p, q) {
  if (!q) return true;
  if (p.name.toLowerCase().includes(q)) return true;
  return p.servers.some((s) => [s.server, s.reason, s.presented_pin].some((x) => x && x.toLowerCase().includes(q)));
}

function render(doc) {
  const started = performance.now();
  const now = Date.now();
  const bounds = doc.latency_buckets_seconds || [];
  const q = document.getElementById("filter").value.trim().toLowerCase();
  const onlyProblems = document.getElementById("problems").checked;
  const pools = doc.pools || [];
  const shown = pools.filter((p) => matches(p, q) && (!onlyProblems || poolProblem(p)));
  const box = document.getElementById("pools");
  const frag = document.createDocumentFragment();
  for (const p of shown) frag.append(poolBlock(p, now, bounds, pools.length > 20));
  if (!shown.length) frag.append(el("p", { class: "muted" }, pools.length ? "no pool matches" : "no pools"));
  box.replaceChildren(frag);
  listeners(doc);
  routes(doc);
  const servers = pools.reduce((a, p) => a + p.servers.length, 0);
  const down = pools.reduce((a, p) => a + p.servers.length - p.healthy_servers, 0);
  const empty = pools.filter((p) => p.healthy_servers === 0).length;
  const summary = document.getElementById("summary");
  summary.replaceChildren(el("span", {},
    el("span", {}, pools.length + " pools, " + servers + " servers"), " ",
    el("span", { class: "badge " + (down ? "bad" : "ok") }, down ? down + " down" : "all up"), " ",
    empty ? el("span", { class: "badge bad" }, empty + " pool(s) without a healthy server") : null, " ",
    doc.draining ? el("span", { class: "badge warn", id: "draining" }, "DRAINING") : null));
  const c = doc.config || {};
  document.getElementById("config").textContent = "generation " + c.generation + ", loaded " + c.loaded_at +
    " from " + c.file + " (sha256 " + String(c.sha256 || "").slice(0, 12) + "…)";
  const updated = document.getElementById("updated");
  updated.textContent = "updated " + new Date(now).toLocaleTimeString();
  updated.dataset.renderMs = (performance.now() - started).toFixed(1);
}

async function poll() {
  const err = document.getElementById("error");
  try {
    const r = await fetch("/status?compact", { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) throw new Error("/status answered " + r.status);
    const doc = await r.json();
    const now = Date.now();
    for (const p of doc.pools || []) for (const s of p.servers) record(p.name + "\u0000" + s.server, now, s);
    last = doc;
    render(doc);
    err.hidden = true;
  } catch (e) {
    err.textContent = "cannot read /status: " + e.message + " (showing the last answer)";
    err.hidden = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("filter").addEventListener("input", () => last && render(last));
  document.getElementById("problems").addEventListener("change", () => last && render(last));
  poll();
  setInterval(poll, POLL_MS);
});
