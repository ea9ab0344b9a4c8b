// Services: the registry's inventory (GET /v1/services), each service's subsets (its
// ServicePolicy) and the routes that send to it (every backend naming it in a route kind).
"use strict";
XDS.page(async function services(ctx) {
  const { api, el } = XDS;
  const ROUTE_KINDS = ["routes", "tcp-routes", "tls-routes"];

  async function all(path) {
    const answer = await api("/v1/" + path + "?limit=1000");
    return answer.ok ? answer.body.items : [];
  }
  // Every value of a "service" key under a document's spec.
  function servicesNamed(value, found) {
    if (Array.isArray(value)) value.forEach((v) => servicesNamed(v, found));
    else if (value && typeof value === "object") {
      for (const [k, v] of Object.entries(value)) {
        if (k === "service" && typeof v === "string") found.add(v); else servicesNamed(v, found);
      }
    }
    return found;
  }

  const [inventory, policies, ...routeLists] = await Promise.all([
    api("/v1/services"), all("service-policies"), ...ROUTE_KINDS.map(all)]);
  if (!inventory.ok) { XDS.notice(XDS.problemText(inventory)); return; }
  const routesTo = new Map();
  routeLists.flat().forEach((doc) => {
    for (const service of servicesNamed(doc.spec, new Set())) {
      if (!routesTo.has(service)) routesTo.set(service, []);
      routesTo.get(service).push(doc.kind + "/" + doc.name);
    }
  });
  const subsets = new Map(policies.map((p) => [p.name, (p.spec.subsets || []).map((s) => s.name)]));

  const search = el("input", { id: "services-search", type: "search", placeholder: "service" });
  const list = el("div", { id: "services-list" });
  ctx.content.append(el("div", { class: "toolbar" },
    el("label", { for: "services-search", text: "Search" }), search,
    el("span", { class: "summary", text: inventory.body.items.length + " services" +
      (inventory.body.synced ? "" : " (registry not synced yet)") })), list);

  for (const service of inventory.body.items) {
    const healthy = service.endpoints.filter((e) => e.health === "healthy").length;
    const rows = service.endpoints.map((e) => el("tr", { class: "health-" + e.health },
      el("td", { class: "mono", text: e.address + ":" + e.port }),
      el("td", {}, el("span", { class: "badge " + e.health, text: e.health })),
      el("td", { text: [e.region, e.zone].filter(Boolean).join(" / ") || "—" }),
      el("td", { text: String(e.weight) }),
      el("td", { text: String(e.priority) }),
      el("td", { class: "mono", text: Object.keys(e.metadata).length ? JSON.stringify(e.metadata) : "" })));
    const section = el("section", { class: "card", "data-service": service.name,
      "aria-labelledby": "svc-" + service.name },
      el("h2", { id: "svc-" + service.name, text: service.name }),
      el("p", { class: "facts" },
        `${service.endpoints.length} instances, ${healthy} healthy` +
        (service.mesh_endpoints.length ? `, ${service.mesh_endpoints.length} mesh sidecars` : "")),
      el("p", { class: "facts routes" }, "Routes sending here: ",
        (routesTo.get(service.name) || ["none"]).join(", ")),
      subsets.get(service.name) && subsets.get(service.name).length ?
        el("p", { class: "facts" }, "Subsets: " + subsets.get(service.name).join(", ")) : null,
      el("div", { class: "scroll" }, el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, ["Instance", "Health", "Zone", "Weight", "Priority", "Metadata"].map(
          (h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, rows))));
    list.append(section);
  }
  search.addEventListener("input", () => {
    const q = search.value.trim().toLowerCase();
    for (const card of list.children) card.hidden = !!q && !card.dataset.service.includes(q);
  });
});
