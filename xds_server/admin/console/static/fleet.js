// Fleet: every proxy, its sync status per type, live from /v1/events. Rows are keyed by node
// id and rebuilt only when what they show changed, so a thousand status changes cost one
// list read (at most every 250 ms) and the rows that moved.
"use strict";
XDS.page(async function fleet(ctx) {
  const { api, el } = XDS;
  const TYPES = ["CDS", "EDS", "LDS", "RDS", "SDS"];
  const rows = new Map();
  let proxies = [];

  const search = el("input", { id: "fleet-search", type: "search", placeholder: "node id or group",
    "aria-controls": "fleet-table" });
  const status = el("select", { id: "fleet-status", "aria-controls": "fleet-table" },
    ["", "NACKED", "STALE", "NOT_SENT", "SYNCED"].map((s) => el("option", { value: s, text: s || "any" })));
  const live = el("span", { id: "fleet-live", class: "live", role: "status", text: "connecting…" });
  const summary = el("p", { id: "fleet-summary", class: "summary", "aria-live": "polite" });
  const body = el("tbody");
  const table = el("table", { id: "fleet-table", class: "grid" },
    el("caption", { class: "sr-only", text: "Proxies and their sync status per resource type" }),
    el("thead", {}, el("tr", {},
      ["Status", "Node", "Group", "Client", "Connected since", ...TYPES, "Last NACK"].map(
        (h) => el("th", { scope: "col", text: h })))),
    body);
  const chart = el("figure", { class: "chart", id: "fleet-convergence" },
    el("figcaption", { text: "Convergence time (push to ACK), all types: observations per bucket" }));
  ctx.content.append(
    el("div", { class: "toolbar" },
      el("label", { for: "fleet-search", text: "Search" }), search,
      el("label", { for: "fleet-status", text: "Status" }), status, live),
    summary, el("div", { class: "scroll" }, table), chart);

  function since(text) { return text ? text.replace("T", " ").replace(/\.\d+Z$/, "Z") : ""; }

  // What each cell shows, as text: a cell is rewritten only when its text changes.
  function cellsOf(p) {
    return [
      ["badge", p.status],
      ["node", p.node_id],
      ["text", p.group],
      ["text", (p.envoy_version || "?") + " · " + p.stream_kind + (p.connected ? "" : " · gone")],
      ["mono", since(p.connected_since)],
      ...TYPES.map((t) => (p.types[t] ? ["badge", p.types[t].status] : ["text", "—"])),
      ["nack", nackOf(p)],
    ];
  }

  function nackOf(p) {
    const found = TYPES.filter((t) => p.types[t] && p.types[t].status === "NACKED");
    return found.map((t) => t + ": " + p.types[t].last_nack.message).join("\n");
  }

  function fill(cell, [how, value]) {
    if (how === "badge") {
      cell.replaceChildren(el("span", { class: "badge " + value.toLowerCase(), text: value }));
    } else cell.textContent = value;
  }

  function buildRow(p) {
    const parts = cellsOf(p);
    const cells = parts.map(([how], i) => {
      if (how === "node") return el("th", { scope: "row", class: "mono" });
      const attrs = { class: how === "mono" ? "mono" : how === "nack" ? "nack" : null };
      if (i >= 5 && i < 5 + TYPES.length) attrs["data-type"] = TYPES[i - 5];
      return el("td", attrs);
    });
    parts.forEach((part, i) => fill(cells[i], part));
    const row = el("tr", { "data-node": p.node_id }, cells);
    return { row: row, cells: cells, parts: parts.map((x) => x.join("|")) };
  }

  function update(entry, p) {
    cellsOf(p).forEach((part, i) => {
      const key = part.join("|");
      if (entry.parts[i] !== key) { fill(entry.cells[i], part); entry.parts[i] = key; }
    });
  }

  function visible(p) {
    const q = search.value.trim().toLowerCase();
    if (status.value && p.status !== status.value) return false;
    return !q || p.node_id.toLowerCase().includes(q) || p.group.toLowerCase().includes(q);
  }

  function place(entry, p) {
    const row = entry.row;
    if (row.dataset.status !== p.status) row.dataset.status = p.status;
    row.classList.toggle("nacked", p.status === "NACKED");
    row.classList.toggle("disconnected", !p.connected);
    const hide = !visible(p);
    if (row.hidden !== hide) row.hidden = hide;
  }

  // Apply a list to the table in slices of ~12 ms, yielding to the browser in between, so
  // that a thousand changed rows never hold the main thread long enough to freeze it.
  const pause = () => (globalThis.scheduler && scheduler.yield ? scheduler.yield()
    : new Promise((resolve) => setTimeout(resolve, 0)));
  let generation = 0;
  async function render() {
    const mine = ++generation;
    const list = proxies;
    const seen = new Set();
    const counts = {};
    let previous = null;
    let sliceStart = performance.now();
    for (const p of list) {
      if (performance.now() - sliceStart > 12) {
        await pause();
        if (mine !== generation) return;  // a newer list arrived: render that one instead
        sliceStart = performance.now();
        previous = previous && previous.isConnected ? previous : null;
      }
      counts[p.status] = (counts[p.status] || 0) + 1;
      seen.add(p.node_id);
      let entry = rows.get(p.node_id);
      if (!entry) { entry = buildRow(p); rows.set(p.node_id, entry); } else update(entry, p);
      place(entry, p);
      // Keep the server's order (by node id) with as few moves as possible.
      const expected = previous ? previous.nextSibling : body.firstChild;
      if (expected !== entry.row) body.insertBefore(entry.row, expected);
      previous = entry.row;
    }
    for (const [id, entry] of rows) {
      if (!seen.has(id)) { entry.row.remove(); rows.delete(id); }
    }
    const parts = Object.entries(counts).sort().map(([s, n]) => n + " " + s);
    summary.textContent = list.length + " proxies" + (parts.length ? ": " + parts.join(", ") : "");
  }

  let pending = null;
  let inFlight = false;
  async function refresh() {
    if (inFlight) { schedule(); return; }
    inFlight = true;
    try {
      const answer = await api("/v1/proxies");
      if (answer.ok) { proxies = answer.body.items; await render(); }
    } finally { inFlight = false; }
  }
  function schedule() {
    if (pending === null) pending = setTimeout(() => { pending = null; refresh(); }, 250);
  }

  async function convergence() {
    const response = await fetch("/metrics", { credentials: "omit", cache: "no-store" });
    if (!response.ok) return;
    const text = await response.text();
    const buckets = new Map();
    const re = /^xds_server_proxy_convergence_seconds_bucket\{([^}]*)\}\s+([0-9.e+-]+)/gm;
    let m;
    while ((m = re.exec(text))) {
      const le = /le="([^"]+)"/.exec(m[1]);
      if (le) buckets.set(le[1], (buckets.get(le[1]) || 0) + Number(m[2]));
    }
    const bounds = [...buckets.keys()].sort((a, b) => (a === "+Inf") - (b === "+Inf") || Number(a) - Number(b));
    let below = 0;
    const bars = bounds.map((le) => { const n = buckets.get(le) - below; below = buckets.get(le); return [le, n]; });
    const max = Math.max(1, ...bars.map((b) => b[1]));
    const width = 36;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 -16 ${Math.max(1, bars.length) * width} 146`);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "Convergence histogram: " +
      bars.map(([le, n]) => `${n} at most ${le} s`).join(", "));
    bars.forEach(([le, n], i) => {
      const h = Math.round((n / max) * 100);
      const rect = document.createElementNS(svg.namespaceURI, "rect");
      rect.setAttribute("x", i * width + 4); rect.setAttribute("y", 105 - h);
      rect.setAttribute("width", width - 8); rect.setAttribute("height", h);
      const label = document.createElementNS(svg.namespaceURI, "text");
      label.setAttribute("x", i * width + width / 2); label.setAttribute("y", 122);
      label.textContent = le === "+Inf" ? "∞" : le;
      const count = document.createElementNS(svg.namespaceURI, "text");
      count.setAttribute("x", i * width + width / 2); count.setAttribute("y", 100 - h);
      count.textContent = n ? String(n) : "";
      svg.append(rect, label, count);
    });
    const old = chart.querySelector("svg");
    if (old) old.replaceWith(svg); else chart.append(svg);
  }

  search.addEventListener("input", () => render());
  status.addEventListener("change", () => render());
  XDS.events("connect,disconnect,ack,nack,snapshot", schedule, (up) => {
    live.textContent = up ? "live" : "reconnecting…";
    live.classList.toggle("up", up);
    if (up) schedule();  // catch up on what happened while the stream was down
  });
  await refresh();
  convergence();  // decoration: the page is usable before the histogram is drawn
  setInterval(convergence, 10000);
});
