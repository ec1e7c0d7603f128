// streamproc dashboard: renders /dashboard/state snapshots pushed over server-sent events (/events/stream).
// No framework and no network beyond this worker.
"use strict";

const $ = id => document.getElementById(id);
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"}[c]));
const num = (x, d = 0) => x == null ? "–" : Number(x).toLocaleString(undefined, {maximumFractionDigits: d, minimumFractionDigits: d});
const rate = x => x == null ? "–" : (x >= 100 ? num(x) : num(x, 1)) + "/s";
const secs = s => s == null ? "–" : s < 90 ? num(s, 1) + " s" : s < 5400 ? num(s / 60, 1) + " min" : num(s / 3600, 1) + " h";
const pct = x => x == null ? "–" : num(100 * x, 0) + " %";
// Every time on the page is UTC (as in the alert descriptions), labelled event time or wall clock.
const utc = (t, withSeconds = false) => { const d = new Date(t); return isNaN(d) ? esc(t) : d.toISOString().slice(11, withSeconds ? 19 : 16) + " UTC"; };
const when = iso => utc(iso);

let last = null;        // latest snapshot
let lastAt = 0;         // Date.now() when it arrived
const durations = {};   // dedup_key -> chosen silence duration (survives re-renders)
const rendered = {};    // element id -> signature of what it shows, to skip needless re-renders

function setHTML(id, html) {
  if (rendered[id] === html) return;
  rendered[id] = html;
  $(id).innerHTML = html;
}

function toast(text, bad) {
  const t = $("toast");
  t.textContent = text;
  t.style.color = bad ? "#ffb4ab" : "#b8f0c8";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ""; }, 8000);
}

// -- sparklines -------------------------------------------------------------------------------------
function sparkline(values, w = 120, h = 26) {
  if (!values || !values.length) return "";
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? w / (values.length - 1) : 0;
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`);
  const [lx, ly] = pts[pts.length - 1].split(",");
  return `<svg class="spark" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" ` +
    `aria-label="last hour: ${values.length} buckets, max ${num(max)}"><title>last hour, max ${num(max)} per bucket</title>` +
    `<polyline points="${pts.join(" ")}"/><circle cx="${lx}" cy="${ly}" r="1.8"/></svg>`;
}

// -- sections ---------------------------------------------------------------------------------------
function card(k, v, s = "", cls = "") {
  return `<div class="card ${cls}"><div class="k">${esc(k)}</div><div class="v">${v}</div><div class="s">${s}</div></div>`;
}

function renderHealth(h, st) {
  const cards = [];
  for (const [t, x] of Object.entries(h.topics)) {
    cards.push(card(t, rate(x.records_per_s), `${num(x.records_total)} in · ${num(x.dead_letters_total)} dead`));
  }
  const wm = h.watermark_delay_max_s;
  cards.push(card("watermark delay", secs(wm), `max over ${Object.keys(h.watermark_delay_s).length} partitions`,
    wm != null && wm > 300 ? "warn" : ""));
  const lag = Object.values(h.consumer_lag_records).reduce((a, b) => a + b, 0);
  cards.push(card("consumer lag", num(lag), "records waiting", lag > 10000 ? "warn" : ""));
  const reasons = Object.entries(h.dead_letters_by_reason).map(([r, n]) => `${esc(r)} ${num(n)}`).join(" · ");
  cards.push(card("dead letters", rate(h.dead_letters_per_s), reasons || "none", h.dead_letters_per_s > 0 ? "warn" : ""));
  if (!h.webhooks.length) {
    cards.push(card("webhooks", h.webhooks_configured ? "idle" : "off",
      h.webhooks_configured ? "nothing delivered yet" : "no STREAMPROC_WEBHOOK_URLS"));
  }
  for (const w of h.webhooks) {
    const ok = (w.posts.delivered ?? w.posts.ok ?? 0), failed = Object.entries(w.posts)
      .filter(([o]) => !["delivered", "ok", "retry"].includes(o)).reduce((a, [, n]) => a + n, 0);
    cards.push(card("webhook " + w.receiver, `${num(w.queue)} queued`, `${num(ok)} delivered · ${num(failed)} failed`,
      failed > 0 ? "bad" : w.queue > 0 ? "warn" : ""));
  }
  cards.push(card("products", num(h.products_tracked), `${num(st.silences_active)} active silences`));
  setHTML("health", cards.join(""));
}

function renderAlerts(alerts, silencesEnabled) {
  $("alert-count").textContent = alerts.length ? String(alerts.length) : "";
  if (!alerts.length) { setHTML("alerts", '<p class="muted">none</p>'); return; }
  const html = alerts.map(a => {
    const l = a.labels || {}, ev = a.evidence || {}, silenced = (a.silenced_by || []).length > 0;
    const ids = ev.review_ids || [];
    const snippets = (ev.snippets || []).map((s, i) =>
      `<li${ids[i] ? ` title="review ${esc(ids[i])}"` : ""}>${esc(typeof s === "string" ? s : s.text)}</li>`).join("");
    const key = a.dedup_key, dur = durations[key] || "7200000";
    const opts = [["3600000", "1 h"], ["7200000", "2 h"], ["28800000", "8 h"], ["86400000", "1 day"]]
      .map(([v, t]) => `<option value="${v}"${v === dur ? " selected" : ""}>${t}</option>`).join("");
    return `<div class="alert ${esc(l.severity)}${silenced ? " silenced" : ""}" data-dedup-key="${esc(key)}">
      <div class="title"><span class="sev">${esc(l.severity)}</span><span class="name">${esc(l.alertname)}</span>
        <span>${esc(l.product_id ?? "")}</span><span class="muted">${esc(l.category ?? "")} · ${esc(l.signal)}</span>
        ${silenced ? '<span class="pill">silenced</span>' : ""}</div>
      <div class="desc">${esc(a.annotations?.summary)}</div>
      <div class="meta">${esc(a.annotations?.description)}</div>
      <div class="meta">observed ${num(a.observed, 1)} · expected ${num(a.expected, 1)} · score ${num(a.score, 3)} ·
        since ${when(a.starts_at)} (event time)</div>
      ${snippets ? `<ul class="snippets">${snippets}</ul>` : ""}
      ${silencesEnabled ? `<div class="actions"><select data-role="duration" aria-label="silence for">${opts}</select>
        <button type="button" data-action="silence">Silence</button></div>` : ""}
    </div>`;
  }).join("");
  setHTML("alerts", html);
}

function renderTrend(id, signal, rows) {
  if (!rows.length) { setHTML(id, '<tbody><tr><td class="muted">no data yet</td></tr></tbody>'); return; }
  const col = signal === "orders" ? "orders_5m" : "clicks_5m";
  const body = rows.map(p => `<tr class="${p.firing ? "firing" : ""}" data-product="${esc(p.product_id)}" data-count="${p[col] ?? 0}">
    <td>${esc(p.product_id)}</td><td class="muted">${esc(p.category ?? "")}</td>
    <td class="num">${num(p[col])}</td>
    <td><span class="bar" style="width:${Math.round(40 * Math.min(1, p.surge_score))}px"></span> ${num(p.surge_score, 2)}</td>
    <td>${sparkline(p.series)}</td></tr>`).join("");
  setHTML(id, `<thead><tr><th>product</th><th>category</th><th class="num">${signal} 5m</th><th>surge score</th>` +
    `<th>last hour</th></tr></thead><tbody>${body}</tbody>`);
}

function renderSentiment(rows, model, prior) {
  const m = $("model");
  m.textContent = model ? "model on" : "no model";
  m.title = model ? "" : "no sentiment model is installed yet: review counts only";
  if (!rows.length) { setHTML("sentiment", '<tbody><tr><td class="muted">no reviews in the last 24 h</td></tr></tbody>'); return; }
  const noModel = '<span class="muted" title="no sentiment model yet">no model</span>';
  const body = rows.map(r => `<tr class="${r.firing ? "firing" : ""}" data-product="${esc(r.product_id)}"
    data-negative="${r.negative_24h ?? ""}" data-reviews="${r.reviews_24h}"><td>${esc(r.product_id)}</td>
    <td class="muted">${esc(r.category ?? "")}</td><td class="num">${num(r.reviews_24h)}</td>
    <td class="num">${r.sentiment_mean_24h == null ? noModel : num(r.sentiment_mean_24h, 2)}</td>
    <td class="num">${r.negative_share_24h == null ? noModel :
      `${num(r.negative_24h)} · ${pct(r.negative_share_24h)}`}</td>
    <td class="num">${r.negative_share_adjusted_24h == null ? "–" : pct(r.negative_share_adjusted_24h)}</td></tr>`).join("");
  setHTML("sentiment", `<thead><tr><th>product</th><th>category</th><th class="num">reviews</th>` +
    `<th class="num">mean sentiment</th><th class="num">negative</th>` +
    `<th class="num" title="negative share with 10 reviews' worth of the shop-wide share (${prior == null ? "–" : pct(prior)}) added: what the ranking uses, so that few reviews weigh little">weighted</th>` +
    `</tr></thead><tbody>${body}</tbody>`);
}

const TRIGGER_LABELS = {cart_abandoned: "cart abandoned", browse_abandoned: "browse abandoned",
  win_back: "win-back", interest_surging: "interest surging"};

function renderTriggers(tr, enabled, nowMs) {
  $("triggers-section").dataset.now = nowMs;  // the snapshot's wall clock: what the counts are as of
  const total = $("trigger-total");
  total.textContent = enabled ? num(tr.total) : "off";
  total.title = enabled ? "triggers published" : "customer features are off (STREAMPROC_CUSTOMERS=0)";
  setHTML("trigger-counts", Object.entries(tr.counts).map(([k, n]) =>
    `<div class="card" data-kind="${esc(k)}" data-count="${n}"><div class="k">${esc(TRIGGER_LABELS[k] || k)}</div>` +
    `<div class="v">${num(n)}</div></div>`).join(""));
  if (!tr.latest.length) { setHTML("triggers", '<tbody><tr><td class="muted">no triggers yet</td></tr></tbody>'); return; }
  const body = tr.latest.map(t => `<tr data-kind="${esc(t.kind)}" data-trigger="${esc(t.trigger_id)}">
    <td>${esc(TRIGGER_LABELS[t.kind] || t.kind)}</td><td>${esc(t.user_id)}</td>
    <td>${esc((t.product_ids || []).join(", "))}</td><td class="muted">${esc(t.reason)}</td>
    <td class="num">${utc(t.ts)}</td></tr>`).join("");
  setHTML("triggers", `<thead><tr><th>kind</th><th>customer</th><th>products</th><th>why</th>` +
    `<th class="num">due (event time)</th></tr></thead><tbody>${body}</tbody>`);
}

function render(st) {
  last = st; lastAt = Date.now();
  const ready = $("ready");
  ready.textContent = st.health.ready ? "ready" : "starting";
  ready.className = "pill " + (st.health.ready ? "ok" : "muted");
  $("updated").textContent = `wall clock ${utc(st.now_ms, true)} · event time ` +
    (st.watermark_ms == null ? "–" : utc(st.watermark_ms, true));
  renderHealth(st.health, st);
  renderAlerts(st.alerts, st.silences_enabled);
  renderTrend("trend-orders", "orders", st.trending.orders);
  renderTrend("trend-clicks", "clicks", st.trending.clicks);
  renderSentiment(st.sentiment, st.sentiment_model, st.negative_share_shop_24h);
  if (st.triggers) renderTriggers(st.triggers, st.triggers_enabled, st.now_ms);
  $("sentiment").dataset.prior = st.negative_share_shop_24h ?? "";
}

// -- silences -----------------------------------------------------------------------------------------
async function silence(alert, durationMs) {
  const matchers = Object.entries(alert.labels || {})
    .filter(([k, v]) => k !== "severity" && v != null && v !== "")  // severity may change while it fires
    .map(([name, value]) => ({name, value: String(value), isRegex: false, isEqual: true}));
  const nowMs = last.now_ms + (Date.now() - lastAt);
  const body = JSON.stringify({matchers, endsAt: nowMs + durationMs,  // starts now (the worker's clock)
    comment: `from the dashboard: ${alert.dedup_key}`, createdBy: "dashboard"});
  let token = sessionStorage.getItem("streamproc-token");
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = {"Content-Type": "application/json"};
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch("/silences", {method: "POST", headers, body});
    if (r.status === 401 && attempt === 0) {
      token = window.prompt("This worker needs its API token (STREAMPROC_API_TOKEN) to create silences:");
      if (!token) return;
      sessionStorage.setItem("streamproc-token", token);
      continue;
    }
    const res = await r.json().catch(() => ({}));
    if (!r.ok) { toast(`silence refused: ${res.error || r.status}`, true); return; }
    toast(`silenced ${alert.dedup_key} until ${utc(nowMs + durationMs)} wall clock (${res.silenceID})`);
    return;
  }
}

$("alerts").addEventListener("change", e => {
  const el = e.target.closest("[data-dedup-key]");
  if (el && e.target.matches("select[data-role=duration]")) durations[el.dataset.dedupKey] = e.target.value;
});
$("alerts").addEventListener("click", async e => {
  const btn = e.target.closest("button[data-action=silence]");
  if (!btn || !last) return;
  const key = btn.closest("[data-dedup-key]").dataset.dedupKey;
  const alert = last.alerts.find(a => a.dedup_key === key);
  if (!alert) return;
  btn.disabled = true;
  try { await silence(alert, Number(durations[key] || "7200000")); }
  catch (err) { toast("silence failed: " + err, true); }
  finally { btn.disabled = false; }
});

// -- live updates ---------------------------------------------------------------------------------------
function connect() {
  const conn = $("conn");
  if (!window.EventSource) { poll(); return; }
  const es = new EventSource("/events/stream");
  es.addEventListener("state", m => {
    conn.textContent = "live"; conn.className = "pill ok";
    render(JSON.parse(m.data));
  });
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "pill bad"; };
  // If no update arrives for a while (a proxy that buffers streams), fall back to fetching.
  setInterval(() => { if (Date.now() - lastAt > 5000) fetchOnce(); }, 5000);
}

async function fetchOnce() {
  try { const r = await fetch("/dashboard/state"); if (r.ok) render(await r.json()); }
  catch (e) { $("ready").textContent = "unreachable"; $("ready").className = "pill bad"; }
}

function poll() { fetchOnce(); setInterval(fetchOnce, 2000); }

fetchOnce();
connect();
