// Mesh: the CA (GET /v1/mesh status), the identities it issued and when they expire, and
// the intentions as a matrix (source row, destination column).
"use strict";
XDS.page(async function mesh(ctx) {
  const { api, el } = XDS;
  const [meshAnswer, intentionsAnswer] = await Promise.all([api("/v1/mesh"), api("/v1/intentions?limit=1000")]);
  if (meshAnswer.status === 404) {
    ctx.content.append(el("p", { id: "mesh-none", text: "No Mesh document: the mesh is off (PUT /v1/mesh to start it)." }));
    return;
  }
  if (!meshAnswer.ok) { XDS.notice(XDS.problemText(meshAnswer)); return; }
  const spec = meshAnswer.body.spec || {};
  const status = meshAnswer.body.status || {};
  const intentions = intentionsAnswer.ok ? intentionsAnswer.body.items : [];
  const now = Date.now();
  const left = (t) => {
    const h = (Date.parse(t) - now) / 3600000;
    return h < 0 ? "expired" : h < 48 ? h.toFixed(1) + " h left" : (h / 24).toFixed(1) + " days left";
  };
  const ca = status.ca;
  ctx.content.append(el("section", { class: "card", "aria-labelledby": "h-ca" },
    el("h2", { id: "h-ca", text: "Certificate authority" }),
    el("dl", { class: "facts" },
      el("dt", { text: "Trust domain" }), el("dd", { text: spec.trust_domain || "mesh.local (default)" }),
      el("dt", { text: "mTLS" }), el("dd", { text: spec.mtls || "strict (default)" }),
      el("dt", { text: "Default action" }), el("dd", { text: spec.default_action || "deny (default)" }),
      el("dt", { text: "Root" }), el("dd", { class: "mono", text: ca ? ca.subject + " · " + ca.fingerprint_sha256 : "not made yet" }),
      el("dt", { text: "Root expires" }), el("dd", { text: ca ? ca.not_after + " (" + left(ca.not_after) + ")" : "" }),
      status.rotation ? [el("dt", { text: "Rotation" }), el("dd", { text: status.rotation.next_step + " at " + status.rotation.due })] : null,
      status.error ? [el("dt", { text: "Error" }), el("dd", { class: "error", text: status.error })] : null)));

  const ids = (status.identities || []).slice().sort((a, b) => a.not_after.localeCompare(b.not_after));
  ctx.content.append(el("section", { class: "card", "aria-labelledby": "h-ids" },
    el("h2", { id: "h-ids", text: "Identities (" + ids.length + ")" }),
    el("div", { class: "scroll" }, el("table", { class: "grid", id: "mesh-identities" },
      el("thead", {}, el("tr", {}, ["Service", "SPIFFE id", "Serial", "Expires", "Renews"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ids.length ? null : el("tr", {}, el("td", { colspan: 5, text: "None issued yet (identities are issued for services that have a Sidecar)." })),
        ids.map((i) => el("tr", { class: Date.parse(i.not_after) - now < 3600000 ? "nacked" : "" },
        el("th", { scope: "row", text: i.service }), el("td", { class: "mono", text: i.spiffe_id }),
        el("td", { class: "mono", text: i.serial }), el("td", { text: i.not_after + " (" + left(i.not_after) + ")" }),
        el("td", { text: i.renew_at || "" }))))))));

  const sources = [...new Set(intentions.map((i) => i.spec.source))].sort();
  const destinations = [...new Set(intentions.map((i) => i.spec.destination))].sort();
  const cell = (s, d) => intentions.find((i) => i.spec.source === s && i.spec.destination === d);
  ctx.content.append(el("section", { class: "card", "aria-labelledby": "h-matrix" },
    el("h2", { id: "h-matrix", text: "Intentions" }),
    el("p", { class: "hint", text: "Rows call columns; an empty cell falls back to the default action (" + (spec.default_action || "deny") + ")." }),
    intentions.length ? el("div", { class: "scroll" }, el("table", { class: "grid matrix", id: "mesh-intentions" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "source \\ destination" }), destinations.map((d) => el("th", { scope: "col", text: d })))),
      el("tbody", {}, sources.map((s) => el("tr", {}, el("th", { scope: "row", text: s }),
        destinations.map((d) => {
          const i = cell(s, d);
          const text = !i ? "" : i.spec.action || (i.spec.permissions.length + " L7 rule(s)");
          return el("td", { class: i ? "action-" + (i.spec.action || "l7") : "", title: i ? i.name : null, text: text });
        }))))))
      : el("p", { text: "No intentions." })));
});
