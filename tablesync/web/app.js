// tablesync status page: renders /api/events (SSE) snapshots; "Sync now" posts /api/sync.
// Served as a separate file so the Content-Security-Policy needs no inline script.
// Every value is written with textContent, never parsed as HTML.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const LABELS = {
    green: "All changes synced",
    yellow: "Syncing or offline: changes are queued",
    red: "Needs attention",
  };
  let current = null;
  let conflictCount = null;
  let dismissedCount = 0;
  let source = null;

  function utc(iso) {
    if (!iso) return "never";
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace("Z", " UTC");
  }

  function ago(seconds) {
    if (seconds < 0) seconds = 0;
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " days ago";
  }

  function since(iso) {
    if (!iso) return "never";
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return utc(iso) + " (" + ago((Date.now() - d.getTime()) / 1000) + ")";
  }

  function render(s) {
    current = s;
    const light = $("indicator");
    light.dataset.indicator = s.indicator;
    light.setAttribute("aria-label", "status " + s.indicator);
    const behind = Object.keys(s.server_behind || {}).sort().map(function (t) { return s.server_behind[t]; });
    let label = LABELS[s.indicator] || s.indicator;
    if (s.indicator === "red" && s.reauth_required) label = "Re-authentication required";
    else if (s.indicator === "red" && s.parked > 0) label = "Records parked: the server refused them";
    else if (s.indicator === "red" && behind.length) label = "Server behind: " + behind.join("; ");
    else if (s.indicator === "yellow" && s.queue_depth > 0) {
      label = s.queue_depth + (s.queue_depth === 1 ? " change" : " changes") + " queued";
      if (s.state !== "Connected" && s.state !== "Syncing") label = "Offline: " + label;
    }
    $("indicator-label").textContent = label;
    $("engine-state").textContent = s.engine_alive ? s.state : s.state + " (engine not running)";
    $("system-id").textContent = s.system_id;
    $("last-sync").textContent = since(s.last_sync_at);
    $("queue-depth").textContent = String(s.queue_depth);
    $("oldest-queued").textContent = s.queue_depth && s.oldest_queued_at ? since(s.oldest_queued_at) : "none";
    $("parked").textContent = String(s.parked);
    $("conflicts-24h").textContent = String(s.conflicts_24h);
    $("websocket").textContent = websocketText(s);
    $("last-error").textContent = s.last_error || "none";
    $("server-behind").textContent = behind.length ? behind.join("; ") : "up to date";
    $("backfill").textContent = backfillText(s.backfill || {});
    $("generated-at").textContent = utc(s.generated_at);
    $("reauth-banner").hidden = !s.reauth_required;
    $("failure-banner").hidden = true;
    document.title = "(" + s.indicator + ") tablesync " + s.system_id;
    if (s.conflicts_24h !== conflictCount) {
      conflictCount = s.conflicts_24h;
      loadConflicts();
    }
    renderConflictBanner();
  }

  function backfillText(b) {
    const parts = Object.keys(b).sort().map(function (t) {
      const x = b[t];
      const bits = [];
      if (!x.finished) {
        bits.push(x.done + "/" + x.total + " pushed, " + x.rate + " rows/s" +
                  (x.eta_s != null ? ", about " + Math.round(x.eta_s) + " s left" : ""));
      }
      if (x.other_scope) {
        bits.push(x.other_scope + " of other scopes not synced (" + (x.other_keys || []).join(", ") +
                  (x.other_scope > (x.other_keys || []).length ? ", ..." : "") + ")");
      }
      return bits.length ? t + ": " + bits.join("; ") : "";
    }).filter(Boolean);
    return parts.length ? parts.join(" | ") : "none";
  }

  function websocketText(s) {
    if (s.websocket === "disconnected") {
      return "disconnected" + (s.websocket_down_s ? " for " + Math.round(s.websocket_down_s) + " s" : "");
    }
    return s.websocket;
  }

  function renderConflictBanner() {
    const show = conflictCount > 0 && conflictCount > dismissedCount;
    $("conflict-banner").hidden = !show;
    if (show) {
      $("conflict-banner-text").textContent = conflictCount + (conflictCount === 1 ? " conflict" : " conflicts") +
        " in the last 24 h: a concurrent write was overwritten by a newer one. See the list below.";
    }
  }

  async function loadConflicts() {
    try {
      const r = await fetch("/api/conflicts?limit=50", { credentials: "same-origin" });
      if (!r.ok) return;
      renderConflicts((await r.json()).conflicts);
    } catch (e) {
      /* the next status event retries */
    }
  }

  function cell(tr, text, code) {
    const td = document.createElement("td");
    if (code) {
      const c = document.createElement("code");
      c.textContent = text;
      td.appendChild(c);
    } else {
      td.textContent = text;
    }
    tr.appendChild(td);
  }

  function compact(value) {
    if (value === null || value === undefined) return "";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function renderConflicts(rows) {
    const body = $("conflicts-body");
    body.replaceChildren();
    for (const c of rows) {
      const tr = document.createElement("tr");
      cell(tr, utc(c.resolved_at));
      cell(tr, compact(c.table));
      cell(tr, compact(c.record_id));
      cell(tr, compact(c.reason));
      cell(tr, compact(c.winner), true);
      cell(tr, compact(c.loser), true);
      body.appendChild(tr);
    }
    $("conflicts-table").hidden = rows.length === 0;
    $("conflicts-empty").hidden = rows.length !== 0;
  }

  // The last values shown are stale: grey light, say why; the next status event redraws.
  function unknown(reason) {
    const light = $("indicator");
    light.dataset.indicator = "unknown";
    light.setAttribute("aria-label", "status unknown");
    $("indicator-label").textContent = reason;
  }

  function setLive(state) {
    const el = $("live");
    el.dataset.live = state;
    el.textContent = state === "live" ? "live" : state === "offline" ? "reconnecting…" : "connecting…";
  }

  function connect() {
    source = new EventSource("/api/events");
    source.onopen = () => setLive("live");
    source.addEventListener("status", (e) => {
      setLive("live");
      render(JSON.parse(e.data));
    });
    source.addEventListener("failure", (e) => {
      const banner = $("failure-banner");
      banner.textContent = "Status unavailable: " + JSON.parse(e.data).error;
      banner.hidden = false;
      unknown("Status unavailable");
    });
    source.onerror = () => {
      setLive("offline");
      const lost = source;
      // A stream ending on purpose (hourly) reconnects within 2 s: only then go grey.
      setTimeout(() => {
        if (lost === source && lost.readyState !== EventSource.OPEN) {
          unknown("No connection to the sync engine");
        }
      }, 2500);
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
    };
  }

  async function syncNow() {
    const button = $("sync-now");
    const result = $("sync-result");
    button.disabled = true;
    result.textContent = "Requesting…";
    try {
      const r = await fetch("/api/sync", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": token },
      });
      const body = await r.json();
      result.textContent = r.ok ? "Sync requested" : "Refused: " + body.error;
    } catch (e) {
      result.textContent = "Status server unreachable";
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sync-now").addEventListener("click", syncNow);
    $("conflict-dismiss").addEventListener("click", () => {
      dismissedCount = conflictCount;
      renderConflictBanner();
    });
    setInterval(() => { if (current) { $("last-sync").textContent = since(current.last_sync_at); } }, 1000);
    connect();
  });
})();
