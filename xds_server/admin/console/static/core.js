// The console's core: the token (sessionStorage, this tab only), API calls with it, the
// event stream (fetch + a streamed body: EventSource cannot send an Authorization header,
// and a token in the URL would be logged), small DOM and YAML helpers. No dependencies.
"use strict";
(function () {
  const TOKEN_KEY = "xds-server.token";
  const pages = [];
  const state = { role: "write", needsToken: false };

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    const t = token();
    if (t) h.Authorization = "Bearer " + t;
    return h;
  }

  // One API call: {status, ok, body} (body parsed as JSON when it is JSON).
  async function api(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = headers(opts.headers);
    opts.credentials = "omit";
    opts.cache = "no-store";
    const response = await fetch(path, opts);
    const type = response.headers.get("content-type") || "";
    const body = type.includes("json") ? await response.json() : await response.text();
    if (response.status === 401) showLogin("The server refused the token (401): sign in again.");
    return { status: response.status, ok: response.ok, body: body };
  }

  // The text of a problem+json answer: detail and every {field, reason}.
  function problemText(answer) {
    const b = answer.body;
    if (!b || typeof b !== "object") return "HTTP " + answer.status + ": " + String(b);
    const lines = [(b.status || answer.status) + " " + (b.detail || b.title || "")];
    for (const e of b.errors || []) lines.push(e.field + ": " + e.reason);
    return lines.join("\n");
  }

  // A DOM element: el("td", {class: "x", text: "y"}, child, ...). Text is never HTML.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // YAML of a JSON value, for reading and editing (the API accepts YAML bodies).
  function yaml(value, indent) {
    indent = indent || "";
    const scalar = (v) => {
      if (v === null) return "null";
      if (typeof v === "string") {
        return /^[A-Za-z0-9_./@~*-][A-Za-z0-9_ ./@:~*+-]*$/.test(v) &&
          !/^(true|false|null|yes|no|on|off|~|[-+]?[0-9.]+([eE][-+]?[0-9]+)?)$/i.test(v) &&
          !/(: | #|:$)/.test(v) ? v : JSON.stringify(v);
      }
      return String(v);
    };
    if (Array.isArray(value)) {
      if (!value.length) return "[]";
      return value.map((item) => {
        if (item && typeof item === "object" && !Array.isArray(item) && Object.keys(item).length) {
          const inner = yaml(item, indent + "  ");
          return indent + "- " + inner.slice(indent.length + 2);
        }
        const inner = item && typeof item === "object" ? yaml(item, indent + "  ") : scalar(item);
        return indent + "- " + (item && typeof item === "object" && inner.includes("\n") ? "\n" + inner : inner.trim());
      }).join("\n");
    }
    if (value && typeof value === "object") {
      const keys = Object.keys(value);
      if (!keys.length) return "{}";
      return keys.map((k) => {
        const v = value[k];
        const key = indent + scalar(k) + ":";
        if (v && typeof v === "object" && (Array.isArray(v) ? v.length : Object.keys(v).length)) {
          return key + "\n" + yaml(v, Array.isArray(v) ? indent : indent + "  ");
        }
        return key + " " + (v && typeof v === "object" ? yaml(v) : scalar(v));
      }).join("\n");
    }
    return indent + scalar(value);
  }

  // The document as an operator writes it: kind, name, spec (read-only fields dropped).
  function editable(doc) {
    const out = { kind: doc.kind };
    if (doc.name !== undefined && doc.kind !== "Mesh") out.name = doc.name;
    out.spec = doc.spec;
    return out;
  }

  function notice(text, kind) {
    const box = document.getElementById("notice");
    box.textContent = text || "";
    box.className = "notice " + (kind || "error");
    box.hidden = !text;
  }

  function showLogin(message) {
    state.needsToken = true;
    document.getElementById("content").hidden = true;
    const form = document.getElementById("login");
    form.hidden = false;
    if (message) notice(message);
    document.getElementById("token").focus();
  }

  // Server-sent events over fetch: the token goes in a header. Reconnects with
  // Last-Event-ID after a failure (back-off up to 5 s); returns a function that stops it.
  function events(types, onEvent, onState) {
    const controller = new AbortController();
    let lastId = null;
    let delay = 250;
    async function run() {
      while (!controller.signal.aborted) {
        try {
          const h = headers({ Accept: "text/event-stream" });
          if (lastId !== null) h["Last-Event-ID"] = lastId;
          const query = types ? "?types=" + encodeURIComponent(types) : "";
          const response = await fetch("/v1/events" + query, {
            headers: h, signal: controller.signal, credentials: "omit", cache: "no-store",
          });
          if (response.status === 401) { showLogin("The event stream refused the token."); return; }
          if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
          if (onState) onState(true);
          delay = 250;
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value.replace(/\r\n?/g, "\n");
            // Frames are cut with a moving index and the rest kept once per chunk: a burst
            // of thousands of events is not copied once per event.
            let start = 0;
            let cut;
            while ((cut = buffer.indexOf("\n\n", start)) >= 0) {
              const frame = buffer.slice(start, cut);
              start = cut + 2;
              const parsed = { event: "message", data: "", id: null };
              for (const line of frame.split("\n")) {
                if (!line || line.startsWith(":")) continue;
                const colon = line.indexOf(":");
                const field = colon < 0 ? line : line.slice(0, colon);
                const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
                if (field === "data") parsed.data += (parsed.data ? "\n" : "") + val;
                else if (field === "event") parsed.event = val;
                else if (field === "id") parsed.id = val;
              }
              if (parsed.id !== null) lastId = parsed.id;
              if (parsed.data) {
                let data = parsed.data;
                try { data = JSON.parse(parsed.data); } catch (e) { /* plain text */ }
                onEvent(parsed.event, data);
              }
            }
            buffer = buffer.slice(start);
          }
        } catch (error) {
          if (controller.signal.aborted) return;
        }
        if (onState) onState(false);
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 5000);
      }
    }
    run();
    return () => controller.abort();
  }

  // What a write (apply, rollback; dry run or not) changed or would change: documents, and
  // the Envoy resources per proxy group ("*": every group no listener names).
  function preview(result) {
    const box = el("div", { class: "preview", "data-dry-run": String(result.dry_run) });
    box.append(el("h3", { text: (result.dry_run ? "Preview (dry run) against revision " +
      result.base_revision : "Applied: revision " + result.revision) }));
    const docs = result.changes || [];
    box.append(el("p", { text: docs.length ? "Documents:" : "No document changes." }),
      el("ul", { class: "changes" }, docs.map((c) => el("li", { text: c.operation + " " + c.kind + "/" + c.name }))));
    const groups = (result.envoy && result.envoy.groups) || {};
    const names = Object.keys(groups);
    if (names.length) {
      box.append(el("table", { class: "grid envoy-changes" },
        el("caption", { text: "Envoy resources that change, per proxy group" }),
        el("thead", {}, el("tr", {}, ["Group", "Created", "Updated", "Deleted"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, names.map((g) => el("tr", {},
          el("th", { scope: "row", text: g === "*" ? "* (all groups)" : g }),
          ["created", "updated", "deleted"].map((k) => el("td", { class: "mono", text: (groups[g][k] || []).join("\n") })))))));
    } else box.append(el("p", { text: "No Envoy resource changes." }));
    for (const w of result.warnings || []) box.append(el("p", { class: "warning", text: "warning: " + w.field + ": " + w.reason }));
    return box;
  }

  // Disable every write control for a read token (the API refuses such writes anyway).
  function guardWrites(root) {
    if (state.role !== "read") return;
    for (const node of (root || document).querySelectorAll(".write")) {
      node.disabled = true;
      node.setAttribute("aria-disabled", "true");
      node.title = "needs a write token";
    }
  }

  async function start() {
    // Which token is this? A dry-run rollback with no revision: a read token gets 403 (refused
    // before the body is read), a write token 422 (no revision given); nothing is computed.
    const [probe, write] = await Promise.all([api("/v1/revision"), api("/v1/rollback?dry_run=true", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    })]);
    if (probe.status === 401) { showLogin(token() ? "" : "This server needs an API token."); return; }
    if (!probe.ok) { notice(problemText(probe)); return; }
    state.role = write.status === 403 ? "read" : "write";
    document.body.dataset.role = state.role;
    const who = document.getElementById("who");
    who.textContent = state.role === "read" ? "read-only token: writes disabled" :
      (token() ? "write token" : "no token needed");
    document.getElementById("logout").hidden = !token();
    document.getElementById("login").hidden = true;
    notice("");
    const content = document.getElementById("content");
    content.replaceChildren();
    content.hidden = false;
    for (const page of pages) await page({ content: content, revision: probe.body.revision });
    guardWrites(content);
    document.body.dataset.ready = "true";
    if (!performance.getEntriesByName("xds-ready").length) performance.mark("xds-ready");
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = document.getElementById("token");
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      input.value = "";
      start();
    });
    document.getElementById("logout").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      location.reload();
    });
    start();
  });

  window.XDS = {
    api: api, el: el, yaml: yaml, editable: editable, events: events, notice: notice,
    problemText: problemText, preview: preview, guardWrites: guardWrites, state: state,
    page: (fn) => pages.push(fn),
    data: () => JSON.parse(document.getElementById("page-data").textContent),
  };
})();
