// Config: every document by kind, as YAML, with its warnings and revision; an editor that
// applies only what it has previewed (POST /v1/apply?dry_run=true, then the same text).
"use strict";
XDS.page(async function config(ctx) {
  const { api, el, yaml } = XDS;
  const kinds = XDS.data().kinds;
  const select = el("select", { id: "config-kind" },
    kinds.map((k) => el("option", { value: k.path, text: k.kind })));
  const list = el("div", { id: "config-list", "aria-live": "polite" });
  const editor = el("textarea", { id: "config-editor", rows: 16, spellcheck: "false",
    "aria-describedby": "config-editor-help", class: "mono" });
  const previewButton = el("button", { type: "button", id: "config-preview", class: "write", text: "Preview (dry run)" });
  const applyButton = el("button", { type: "button", id: "config-apply", class: "write primary", text: "Apply", disabled: true });
  const result = el("div", { id: "config-result", "aria-live": "polite" });
  let previewed = null;

  ctx.content.append(
    el("div", { class: "toolbar" }, el("label", { for: "config-kind", text: "Kind" }), select,
      el("button", { type: "button", id: "config-new", class: "write", text: "New document",
        onclick: () => edit({ kind: kindOf().kind, name: "", spec: {} }) })),
    el("p", { id: "config-summary", class: "summary" }),
    list,
    el("section", { class: "card editor", "aria-labelledby": "editor-title" },
      el("h2", { id: "editor-title", text: "Edit and apply" }),
      el("label", { for: "config-editor", text: "Documents (YAML; several separated by ---)" }),
      editor,
      el("p", { id: "config-editor-help", class: "hint",
        text: "Preview shows what would change, per proxy group; Apply sends exactly the previewed text." }),
      el("div", { class: "actions" }, previewButton, applyButton), result));

  function kindOf() { return kinds.find((k) => k.path === select.value); }

  function edit(doc) {
    editor.value = yaml(XDS.editable(doc)) + "\n";
    previewed = null; applyButton.disabled = true; result.replaceChildren();
    editor.focus();
  }

  async function load() {
    const kind = kindOf();
    document.getElementById("config-summary").textContent = kind.summary;
    const answer = await api("/v1/" + kind.path + (kind.singleton ? "" : "?limit=1000"));
    list.replaceChildren();
    if (answer.status === 404 && kind.singleton) { list.append(el("p", { text: "No " + kind.kind + " document yet." })); return; }
    if (!answer.ok) { XDS.notice(XDS.problemText(answer)); return; }
    const docs = kind.singleton ? [answer.body] : answer.body.items;
    if (!docs.length) list.append(el("p", { text: "No " + kind.kind + " documents." }));
    for (const doc of docs) {
      const warnings = doc.warnings || [];
      list.append(el("details", { class: "card doc", "data-name": doc.name },
        el("summary", {},
          el("span", { class: "mono", text: doc.kind + "/" + doc.name }),
          el("span", { class: "meta", text: " revision " + doc.revision + " · " + (doc.updated_at || "") }),
          warnings.length ? el("span", { class: "badge stale", text: warnings.length + " warning(s)" }) : null),
        warnings.map((w) => el("p", { class: "warning", text: w.field + ": " + w.reason })),
        el("pre", { class: "yaml", tabindex: "0", text: yaml(XDS.editable(doc)) }),
        el("button", { type: "button", class: "write", text: "Edit " + doc.name, onclick: () => edit(doc) })));
    }
    XDS.guardWrites(list);
  }

  async function send(dryRun) {
    const text = editor.value;
    const answer = await api("/v1/apply" + (dryRun ? "?dry_run=true" : ""), {
      method: "POST", headers: { "Content-Type": "application/yaml" }, body: text });
    result.replaceChildren();
    if (!answer.ok) {
      result.append(el("pre", { class: "error", role: "alert", text: XDS.problemText(answer) }));
      previewed = null; applyButton.disabled = true;
      return;
    }
    result.append(XDS.preview(answer.body));
    if (dryRun) { previewed = text; applyButton.disabled = XDS.state.role === "read"; }
    else { previewed = null; applyButton.disabled = true; await load(); }
  }

  editor.addEventListener("input", () => { if (editor.value !== previewed) applyButton.disabled = true; });
  previewButton.addEventListener("click", () => send(true));
  applyButton.addEventListener("click", () => { if (editor.value === previewed) send(false); });
  select.addEventListener("change", load);
  const wanted = new URLSearchParams(location.search).get("kind");
  if (wanted && kinds.some((k) => k.path === wanted)) select.value = wanted;
  await load();
});
