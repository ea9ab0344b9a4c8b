// History: revisions (who, when, what), the diff between any two, and rollback that shows
// its dry-run preview before it can be confirmed.
"use strict";
XDS.page(async function history(ctx) {
  const { api, el, yaml } = XDS;
  const answer = await api("/v1/history?limit=1000");
  if (!answer.ok) { XDS.notice(XDS.problemText(answer)); return; }
  const entries = answer.body.items;  // newest first
  const revisions = [];
  for (const e of entries) {
    if (!revisions.length || revisions[revisions.length - 1].revision !== e.revision) {
      revisions.push({ revision: e.revision, time: e.time, actor: e.actor, note: e.note, changes: [] });
    }
    revisions[revisions.length - 1].changes.push(e);
  }
  const options = () => revisions.map((r) => el("option", { value: r.revision, text: "r" + r.revision + " · " + r.actor }));
  const from = el("select", { id: "diff-from" }, options());
  const to = el("select", { id: "diff-to" }, options());
  if (revisions.length > 1) from.value = String(revisions[1].revision);
  const diffBox = el("div", { id: "diff", "aria-live": "polite" });
  const target = el("select", { id: "rollback-revision" }, options());
  if (revisions.length > 1) target.value = String(revisions[1].revision);
  const note = el("input", { id: "rollback-note", type: "text", placeholder: "why (recorded in history)" });
  const previewButton = el("button", { type: "button", id: "rollback-preview", class: "write", text: "Preview rollback" });
  const confirmButton = el("button", { type: "button", id: "rollback-confirm", class: "write danger", text: "Confirm rollback", disabled: true });
  const rollbackBox = el("div", { id: "rollback-result", "aria-live": "polite" });
  let previewed = null;

  ctx.content.append(
    el("section", { class: "card", "aria-labelledby": "h-revisions" },
      el("h2", { id: "h-revisions", text: "Revisions" }),
      el("div", { class: "scroll" }, el("table", { class: "grid", id: "history-table" },
        el("thead", {}, el("tr", {}, ["Revision", "When", "Who", "What", "Note"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, revisions.map((r) => el("tr", { "data-revision": r.revision },
          el("th", { scope: "row", text: "r" + r.revision }),
          el("td", { class: "mono", text: r.time }),
          el("td", { text: r.actor }),
          el("td", { text: r.changes.map((c) => c.operation + " " + c.kind + "/" + c.name).join(", ") }),
          el("td", { text: r.note || "" }))))))),
    el("section", { class: "card", "aria-labelledby": "h-diff" },
      el("h2", { id: "h-diff", text: "Diff" }),
      el("div", { class: "toolbar" },
        el("label", { for: "diff-from", text: "From" }), from,
        el("label", { for: "diff-to", text: "To" }), to,
        el("button", { type: "button", id: "diff-show", text: "Show diff", onclick: showDiff })),
      diffBox),
    el("section", { class: "card", "aria-labelledby": "h-rollback" },
      el("h2", { id: "h-rollback", text: "Rollback" }),
      el("div", { class: "toolbar" },
        el("label", { for: "rollback-revision", text: "Restore revision" }), target,
        el("label", { for: "rollback-note", text: "Note" }), note,
        previewButton, confirmButton),
      rollbackBox));

  // The lines of a and b as a unified diff (longest common subsequence).
  function lineDiff(a, b) {
    const n = a.length, m = b.length;
    const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
    const out = [];
    let i = 0, j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && a[i] === b[j]) { out.push([" ", a[i]]); i++; j++; }
      else if (i < n && (j === m || lcs[i + 1][j] >= lcs[i][j + 1])) { out.push(["-", a[i]]); i++; }
      else { out.push(["+", b[j]]); j++; }
    }
    return out;
  }

  function showDiff() {
    let lo = Number(from.value), hi = Number(to.value);
    if (lo > hi) [lo, hi] = [hi, lo];
    const docs = new Map();
    for (const e of [...entries].reverse()) {  // oldest first
      if (e.revision <= lo || e.revision > hi) continue;
      const key = e.kind + "/" + e.name;
      if (!docs.has(key)) docs.set(key, { before: e.before, after: e.after });
      else docs.get(key).after = e.after;
    }
    diffBox.replaceChildren(el("p", { text: `Changes from r${lo} to r${hi}: ${docs.size} document(s)` }));
    for (const [key, d] of docs) {
      const text = (v) => (v === null || v === undefined ? [] : yaml(v).split("\n"));
      const lines = lineDiff(text(d.before), text(d.after));
      diffBox.append(el("h3", { class: "mono", text: key + (d.before == null ? " (created)" : d.after == null ? " (deleted)" : "") }),
        el("pre", { class: "diff", tabindex: "0", "data-doc": key },
          lines.map(([mark, line]) => el("span", { class: mark === "+" ? "add" : mark === "-" ? "del" : "same",
            text: mark + " " + line + "\n" }))));
    }
  }

  async function rollback(dryRun) {
    const body = { revision: Number(target.value) };
    if (note.value.trim()) body.note = note.value.trim();
    const result = await api("/v1/rollback" + (dryRun ? "?dry_run=true" : ""), {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    rollbackBox.replaceChildren();
    if (!result.ok) {
      rollbackBox.append(el("pre", { class: "error", role: "alert", text: XDS.problemText(result) }));
      previewed = null; confirmButton.disabled = true;
      return;
    }
    rollbackBox.append(XDS.preview(result.body));
    if (dryRun) { previewed = target.value; confirmButton.disabled = XDS.state.role === "read"; confirmButton.focus(); }
    else { previewed = null; confirmButton.disabled = true; rollbackBox.append(el("p", { class: "ok", text: "Rolled back to r" + body.revision + " as revision " + result.body.revision + "." })); }
  }
  target.addEventListener("change", () => { previewed = null; confirmButton.disabled = true; rollbackBox.replaceChildren(); });
  previewButton.addEventListener("click", () => rollback(true));
  confirmButton.addEventListener("click", () => { if (previewed === target.value) rollback(false); });
  if (revisions.length > 1) showDiff();
});
