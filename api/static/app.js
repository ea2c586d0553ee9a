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
function fmtTime(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }
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
