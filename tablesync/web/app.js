// tablesync status page: renders /api/events (SSE) snapshots; "Sync now" posts /api/sync;
// parked records come from /api/parked (retry/drop post to /api/parked/*), conflicts from
// /api/conflicts. Served as a separate file so the Content-Security-Policy needs no inline
// script. Every value is written with textContent, never parsed as HTML. Versions arrive
// as strings (HLC integers exceed JavaScript's exact range) and are never parsed.
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
  let parkedKey = null;
  const SVG = "http://www.w3.org/2000/svg";
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

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "unknown";
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 90) return seconds + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function plural(n, one, many) {
    return n + " " + (n === 1 ? one : many);
  }

  function headline(s) {
    const attention = (s.parked || 0) + (s.refused || 0);
    if (s.reauth_required) return "Re-authentication required";
    if (s.push && s.push.total) {
      return "Pushing " + s.push.done + " of " + s.push.total + " records" +
        (attention ? " (" + plural(attention, "record needs", "records need") + " attention)" : "");
    }
    if (attention > 0 && s.indicator !== "green") {
      return plural(attention, "record needs", "records need") + " attention: see below";
    }
    if (s.indicator === "green" && s.refused) {
      return LABELS.green + " (" + plural(s.refused, "refused server row", "refused server rows") + " below)";
    }
    if (s.indicator === "red") {
      const why = s.cause_text || (s.reasons && s.reasons[0]);
      return why ? LABELS.red + ": " + why : LABELS.red;
    }
    let label = LABELS[s.indicator] || s.indicator;
    if (s.indicator === "yellow" && s.queue_depth > 0) {
      label = s.queue_depth + (s.queue_depth === 1 ? " change" : " changes") + " queued";
      if (s.state !== "Connected" && s.state !== "Syncing") label = "Offline: " + label;
    }
    return label;
  }

  function render(s) {
    current = s;
    const light = $("indicator");
    light.dataset.indicator = s.indicator;
    light.setAttribute("aria-label", "status " + s.indicator);
    $("indicator-label").textContent = headline(s);
    $("engine-state").textContent = s.engine_alive ? s.state : s.state + " (engine not running)";
    $("system-id").textContent = s.system_id;
    $("last-sync").textContent = since(s.last_sync_at);
    $("queue-depth").textContent = String(s.queue_depth);
    $("oldest-queued").textContent = s.queue_depth && s.oldest_queued_at ? since(s.oldest_queued_at) : "none";
    $("parked").textContent = String(s.parked);
    $("refused").textContent = String(s.refused || 0);
    $("backend-url").textContent = s.backend_url || "none (local only)";
    renderProgress(s);
    renderRetry(s);
    renderTables(s.tables || {});
    renderChart(s.per_minute || []);
    const key = (s.parked || 0) + "/" + (s.refused || 0);
    if (key !== parkedKey) {
      parkedKey = key;
      loadParked();
    }
    $("conflicts-24h").textContent = String(s.conflicts_24h);
    $("websocket").textContent = websocketText(s);
    $("cause").textContent = s.cause_text || "none";
    $("last-error").textContent = s.last_error || "none";
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

  function renderProgress(s) {
    const push = s.push, pull = s.pull;
    $("progress-card").hidden = !push && !pull;
    $("push-progress").hidden = !push;
    if (push) {
      const total = push.total || push.done;
      $("push-bar").max = Math.max(total, 1);
      $("push-bar").value = push.done;
      $("push-text").textContent = push.done + " of " + total + " records, " +
        push.rate_per_s + "/s, " + (push.eta_s === null ? "ETA unknown" : "ETA " + duration(push.eta_s)) +
        " (since " + utc(push.started_at) + ")";
    }
    $("pull-progress").hidden = !pull;
    if (pull) {
      $("pull-text").textContent = pull.done + " rows, " + pull.rate_per_s + "/s (since " +
        utc(pull.started_at) + ")";
    }
  }

  function renderRetry(s) {
    $("next-retry-line").hidden = !s.next_retry_at;
    if (s.next_retry_at) {
      const left = (new Date(s.next_retry_at).getTime() - Date.now()) / 1000;
      $("next-retry").textContent = "in " + duration(left) + " (" + utc(s.next_retry_at) + ")";
    }
  }

  function renderTables(tables) {
    const body = $("tables-body");
    body.replaceChildren();
    for (const name of Object.keys(tables).sort()) {
      const t = tables[name];
      const tr = document.createElement("tr");
      tr.dataset.table = name;
      cell(tr, name);
      for (const k of ["queued", "pushed", "pulled", "parked", "refused"]) {
        const td = cell(tr, String(t[k] || 0));
        td.className = "num" + ((k === "parked" || k === "refused") && t[k] ? " bad" : "");
        td.dataset.col = k;
      }
      body.appendChild(tr);
    }
  }

  function renderChart(minutes) {
    const svg = $("activity-chart");
    svg.replaceChildren();
    let peak = 1;
    for (const m of minutes) peak = Math.max(peak, m.pushed, m.pulled);
    const width = 600 / Math.max(minutes.length, 1);
    minutes.forEach((m, i) => {
      [["pushed", 0], ["pulled", 0.5]].forEach(([kind, offset]) => {
        const value = m[kind];
        if (!value) return;
        const h = Math.max(1, (value / peak) * 115);
        const r = document.createElementNS(SVG, "rect");
        r.setAttribute("x", String(i * width + offset * width));
        r.setAttribute("y", String(120 - h));
        r.setAttribute("width", String(width / 2 - 0.5));
        r.setAttribute("height", String(h));
        r.setAttribute("class", "bar " + kind);
        r.dataset.minute = m.minute;
        const title = document.createElementNS(SVG, "title");
        title.textContent = utc(m.minute) + ": " + value + " " + kind;
        r.appendChild(title);
        svg.appendChild(r);
      });
    });
    $("chart-start").textContent = minutes.length ? utc(minutes[0].minute) : "";
    $("chart-peak").textContent = "peak " + peak + "/min";
  }

  async function loadParked() {
    try {
      const r = await fetch("/api/parked", { credentials: "same-origin" });
      if (!r.ok) return;
      const body = await r.json();
      renderParked(body.parked, body.actions);
    } catch (e) {
      /* the next status event retries */
    }
  }

  function renderParked(rows, actions) {
    const body = $("parked-body");
    body.replaceChildren();
    for (const p of rows) {
      const tr = document.createElement("tr");
      tr.dataset.kind = p.kind;
      tr.dataset.record = p.table + "/" + p.record_id;
      cell(tr, p.kind === "push" ? "parked push" : "refused pull");
      cell(tr, p.table);
      cell(tr, p.record_id, true);
      cell(tr, p.reason + (p.kind === "push" && p.pending ? " (" + plural(p.pending, "change", "changes") + " held)" :
        p.tries ? " (" + plural(p.tries, "try", "tries") + ")" : ""));
      cell(tr, utc(p.since));
      cell(tr, p.version || "", true);
      const td = document.createElement("td");
      td.className = "row-actions";
      if (actions) {
        td.appendChild(actionButton("Retry", "retry", p));
        td.appendChild(actionButton("Drop", "drop", p));
      }
      tr.appendChild(td);
      body.appendChild(tr);
    }
    $("parked-card").hidden = rows.length === 0;
  }

  function actionButton(label, action, p) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.className = action;
    b.addEventListener("click", () => {
      // dropping discards data (kept in a backup file): a second click confirms it
      if (action === "drop" && b.dataset.armed !== "1") {
        b.dataset.armed = "1";
        b.textContent = "Confirm drop";
        return;
      }
      parkedAction(action, p, b);
    });
    return b;
  }

  async function parkedAction(action, p, button) {
    const result = $("parked-result");
    button.disabled = true;
    const q = new URLSearchParams({ table: p.table, record_id: p.record_id, kind: p.kind });
    try {
      const r = await fetch("/api/parked/" + action + "?" + q.toString(), {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": token },
      });
      const body = await r.json();
      if (!r.ok) result.textContent = "Refused: " + body.error;
      else if (action === "drop") result.textContent = "Dropped " + p.table + " " + p.record_id + "; backup: " + body.backup;
      else result.textContent = "Released " + p.table + " " + p.record_id + " for another try";
    } catch (e) {
      result.textContent = "Status server unreachable";
    }
    loadParked();
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
    return td;
  }

  function compact(value) {
    if (value === null || value === undefined) return "";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  // a conflict side: the store's {version: [hlc, origin], deleted, data} or a flat row
  // with _ts_* columns; versions are strings from the API and stay strings
  function side(x) {
    x = x || {};
    if (Array.isArray(x.version) && x.data && typeof x.data === "object") {
      return { fields: x.data, version: String(x.version[0]) + " from " + x.version[1] +
        (x.deleted ? " (deleted)" : "") };
    }
    const fields = {};
    for (const k of Object.keys(x)) if (!k.startsWith("_ts_")) fields[k] = x[k];
    const v = x._ts_hlc === undefined ? "" :
      String(x._ts_hlc) + (x._ts_origin ? " from " + x._ts_origin : "") + (x._ts_deleted === true ? " (deleted)" : "");
    return { fields: fields, version: v };
  }

  // one conflict: who won, then every field side by side, changed ones marked
  function renderConflict(c) {
    const box = document.createElement("div");
    box.className = "conflict";
    box.dataset.record = compact(c.table) + "/" + compact(c.record_id);
    const head = document.createElement("div");
    head.className = "conflict-head";
    head.textContent = utc(c.resolved_at) + " · " + compact(c.table) + " " + compact(c.record_id) +
      " · " + compact(c.reason);
    box.appendChild(head);
    const table = document.createElement("table");
    table.className = "diff";
    const head2 = document.createElement("tr");
    for (const h of ["Field", "Kept (winner)", "Overwritten"]) {
      const th = document.createElement("th");
      th.textContent = h;
      head2.appendChild(th);
    }
    table.appendChild(head2);
    const w = side(c.winner), l = side(c.loser);
    const winner = w.fields, loser = l.fields;
    const vrow = document.createElement("tr");
    vrow.className = "version";
    cell(vrow, "version");
    cell(vrow, w.version, true);
    cell(vrow, l.version, true);
    table.appendChild(vrow);
    const fields = [...new Set([...Object.keys(winner), ...Object.keys(loser)])].sort();
    for (const f of fields) {
      const tr = document.createElement("tr");
      const a = compact(winner[f]), b = compact(loser[f]);
      tr.dataset.field = f;
      tr.className = a === b ? "same" : "changed";
      cell(tr, f);
      cell(tr, f in winner ? a : "(absent)", true);
      cell(tr, f in loser ? b : "(absent)", true);
      table.appendChild(tr);
    }
    box.appendChild(table);
    return box;
  }

  function renderConflicts(rows) {
    $("conflicts-list").replaceChildren(...rows.map(renderConflict));
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
          checkSession();
        }
      }, 2500);
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
    };
  }

  // a restarted engine no longer knows this page's cookie: say how to get back in
  async function checkSession() {
    try {
      const r = await fetch("/api/status", { credentials: "same-origin" });
      if (r.status !== 401) return;
      const banner = $("failure-banner");
      banner.textContent = "This page's session ended (the engine restarted). Run " +
        "`tablesync sync page` and open the new link.";
      banner.hidden = false;
      source.close();
      unknown("Signed out");
    } catch (e) {
      /* the engine is down: the grey light says so */
    }
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
    setInterval(() => {
      if (current) {
        $("last-sync").textContent = since(current.last_sync_at);
        renderRetry(current);
      }
    }, 1000);
    connect();
  });
})();
