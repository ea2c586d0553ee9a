// Shared by the dashboard pages: sign-in, authorised fetch, formatting. No framework, no CDN.
"use strict";

const Api = {
  tokenKey: "energy.token",
  token() { return sessionStorage.getItem(this.tokenKey); },
  setToken(t) { sessionStorage.setItem(this.tokenKey, t); },
  signOut() { sessionStorage.removeItem(this.tokenKey); location.href = "/dashboard"; },

  async get(path) {
    const resp = await fetch(path, { headers: { Authorization: "Bearer " + this.token() } });
    if (resp.status === 401) { this.signOut(); throw new Error("signed out"); }
    if (!resp.ok) {
      let msg = resp.status + "";
      try { msg = (await resp.json()).error.message; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return { body: await resp.json(), headers: resp.headers };
  },

  // Downloads need the bearer header, so fetch the CSV and hand it to the browser as a blob.
  async download(path, filename) {
    const resp = await fetch(path, { headers: { Authorization: "Bearer " + this.token() } });
    if (!resp.ok) { throw new Error("export failed: " + resp.status); }
    const blob = await resp.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  },
};

function fmtKw(v) { return v === null || v === undefined ? "–" : Number(v).toFixed(1) + " kW"; }
function fmtPct(v) { return v === null || v === undefined ? "–" : Number(v).toFixed(1) + " %"; }

// Times are shown in the facility's own zone (never the browser's), labelled with that zone,
// with the UTC instant on hover.
const Zone = {
  parts(ms, zone) {
    const f = new Intl.DateTimeFormat("en-GB", { timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit",
      day: "2-digit", hour: "2-digit", minute: "2-digit", timeZoneName: "longOffset" });
    return Object.fromEntries(f.formatToParts(ms).map((p) => [p.type, p.value]));
  },
  // "2026-07-01 15:00" in the zone; time only with short = true
  format(ms, zone, short) {
    const p = this.parts(ms, zone);
    return (short ? "" : `${p.year}-${p.month}-${p.day} `) + `${p.hour}:${p.minute}`;
  },
  offset(ms, zone) { const o = this.parts(ms, zone).timeZoneName.replace("GMT", "UTC"); return o === "UTC" ? "UTC+00:00" : o; },
  offsetMs(ms, zone) {
    const m = this.offset(ms, zone).match(/([+\-\u2212])(\d\d):(\d\d)/);
    return m ? (m[1] === "+" ? 1 : -1) * (Number(m[2]) * 60 + Number(m[3])) * 60000 : 0;
  },
  // axis ticks every stepMs, on the zone's local clock (a 1-day step falls on local midnight)
  ticks(min, max, stepMs, zone) {
    const off = this.offsetMs(min, zone), out = [];
    for (let v = Math.ceil((min + off) / stepMs) * stepMs - off; v <= max; v += stepMs) out.push({ value: v });
    return out;
  },
  label(zone, ms) { return `${zone} (${this.offset(ms === undefined ? Date.now() : ms, zone)})`; },
  utc(ms) { return new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC"; },
  // "start – end" as <time> elements; the end's date only when it differs from the start's
  span(startIso, endIso, zone) {
    const sameDay = this.format(Date.parse(startIso), zone).slice(0, 10) === this.format(Date.parse(endIso), zone).slice(0, 10);
    return [this.el(startIso, zone), " – ", this.el(endIso, zone, sameDay)];
  },
  // a <time> element: local text, UTC on hover
  el(iso, zone, short) {
    if (!iso) return el("span", {}, "–");
    const ms = Date.parse(iso);
    return el("time", { datetime: new Date(ms).toISOString(), title: this.utc(ms) }, this.format(ms, zone, short));
  },
};

// A DR event's log, one group per facility (null = the event itself): its state path with times,
// and how many other entries (commands, reports...) it has, so the timeline reads per facility.
function groupTimeline(entries) {
  const groups = new Map();
  for (const t of entries) {
    const key = t.facility_id || "";
    if (!groups.has(key)) groups.set(key, { steps: [], other: {} });
    const g = groups.get(key);
    if (t.to_state) g.steps.push({ state: t.to_state, at: t.occurred_at });
    else g.other[t.entry_type] = (g.other[t.entry_type] || 0) + 1;
  }
  return groups;
}

function timelineItems(entries, zone) {
  const items = [];
  for (const [fid, g] of groupTimeline(entries)) {
    const line = el("li", { class: "group", "data-facility": fid }, el("strong", {}, fid || "event"), ": ");
    g.steps.forEach((s, k) => line.append(k ? " → " : "", s.state, " (", Zone.el(s.at, zone, true), ")"));
    const other = Object.entries(g.other).map(([type, n]) => `${n} ${type.replaceAll("_", " ")}`);
    if (other.length) line.append(el("span", { class: "muted" }, " · " + other.join(", ")));
    items.push(line);
  }
  return items;
}

function shedText(s) {
  return s ? `shed ${fmtKw(s.mean_reduction_kw)} of ${fmtKw(s.target_kw)} target (${fmtPct(s.performance_pct)})` : "not settled yet";
}
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function setupLogin(onReady) {
  const login = document.getElementById("login");
  const app = document.getElementById("app");
  if (Api.token()) { login.classList.add("hidden"); app.classList.remove("hidden"); onReady(); return; }
  login.classList.remove("hidden"); app.classList.add("hidden");
  document.getElementById("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = document.getElementById("login-error");
    err.textContent = "";
    const resp = await fetch("/api/auth/token", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email: document.getElementById("email").value, password: document.getElementById("password").value }),
    });
    if (!resp.ok) { err.textContent = "Sign-in failed: " + ((await resp.json()).error || {}).message; return; }
    Api.setToken((await resp.json()).access_token);
    login.classList.add("hidden"); app.classList.remove("hidden");
    onReady();
  });
}
