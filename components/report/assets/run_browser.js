// A run's image browser: every layer's caption of each image, with a layer filter, the view kept in
// the address bar, over the data that single/browser_data.py embeds as JSON (<script id="report-data">).
// Search, category filter, legend and paging are browser_common.js's. Inlined into the page as a module
// script (strict mode), so the page stays one self-contained file.
(() => {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const L = D.layers.length, N = D.images.keys.length;
  const capLower = D.captions.map((c) => c.toLowerCase());
  const keyLower = D.images.keys.map((k) => k.toLowerCase());
  const el = (id) => document.getElementById(id);
  const state = { q: "", cat: -1, layer: -1, only: false, page: 0, size: 20 };

  const { text, captionNode: partsNode, categorySets, imageSide, imageBrowser } = window.__lverbDom;
  const capCats = categorySets(D.spans);  // caption index -> set of category indices it contains

  function captionNode(ci) { return partsNode(D.captions[ci], D.spans[ci], D); }

  function rowMatches(ci, q) {
    if (ci < 0) { return false; }
    if (state.cat >= 0 && !capCats[ci][state.cat]) { return false; }
    if (q && capLower[ci].indexOf(q) < 0) { return false; }
    return true;
  }

  function filter() {
    const q = state.q.trim().toLowerCase(), out = [];
    const lo = Math.max(state.layer, 0), hi = state.layer >= 0 ? state.layer + 1 : L;
    const noFilter = !q && state.cat < 0;
    for (let i = 0; i < N; i++) {
      const base = i * L;
      let ok = false;
      if (noFilter) {
        for (let j = lo; j < hi && !ok; j++) { ok = D.images.cap[base + j] >= 0; }
      } else {
        const keyHit = q && state.cat < 0 && keyLower[i].indexOf(q) >= 0;
        for (let j = lo; j < hi && !ok; j++) {
          const ci = D.images.cap[base + j];
          ok = ci >= 0 && (keyHit || rowMatches(ci, q));
        }
      }
      if (ok) { out.push(i); }
    }
    return out;
  }

  function fmt(v, d) { return v < 0 ? "" : (v / 100).toFixed(d); }

  function card(i) {
    const q = state.q.trim().toLowerCase();
    const box = text("div", null, `img-card${D.images.thumbs ? "" : " nothumb"}`);
    box.setAttribute("data-key", D.images.keys[i]);
    const side = imageSide(D.images.thumbs, i, D.images.keys[i]);
    side.appendChild(text("div", `shard ${D.images.shards[D.images.shard[i]]}`));
    const settle = D.images.settle[i];
    side.appendChild(text("div", settle === null ? "caption never settles" : `settles at layer ${settle}`));
    const body = document.createElement("div");
    if (D.images.refs?.[i]?.length) {
      body.appendChild(text("div", `references: ${D.images.refs[i].join(" | ")}`, "refs"));
    }
    const t = text("table", null, "caps");
    const lo = Math.max(state.layer, 0), hi = state.layer >= 0 ? state.layer + 1 : L;
    const filtering = q || state.cat >= 0;
    for (let j = lo; j < hi; j++) {
      const ci = D.images.cap[i * L + j];
      if (ci < 0) { continue; }
      const hit = filtering && rowMatches(ci, q);
      if (state.only && filtering && !hit) { continue; }
      const tr = document.createElement("tr");
      if (hit) { tr.className = "hit"; }
      if (j === L - 1) { tr.className += " final"; }
      tr.setAttribute("data-layer", D.layers[j]);
      const lab = text("td", `L${D.layers[j]}`, "n");
      if (D.layerLabels) { lab.title = D.layerLabels[j]; }
      tr.appendChild(lab);
      const td = text("td", null, "c");
      td.appendChild(captionNode(ci));
      tr.appendChild(td);
      const e = text("td", fmt(D.images.ent[i * L + j], 2), "n");
      e.title = "entropy (bits per token)";
      tr.appendChild(e);
      const f = text("td", fmt(D.images.f1[i * L + j], 2), "n");
      f.title = "token F1 vs the last layer's caption";
      tr.appendChild(f);
      t.appendChild(tr);
    }
    body.appendChild(t);
    box.appendChild(side);
    box.appendChild(body);
    window.__lverbGrounding?.decorate(box, side, i, state.layer);  // the caption maps, when the run has them
    return box;
  }

  function saveHash() {
    const p = [];
    if (state.q) { p.push(`q=${encodeURIComponent(state.q)}`); }
    if (state.cat >= 0) { p.push(`cat=${encodeURIComponent(D.categories[state.cat])}`); }
    if (state.layer >= 0) { p.push(`layer=${D.layers[state.layer]}`); }
    if (state.page) { p.push(`page=${state.page + 1}`); }
    const h = p.join("&");
    if ((`#${h}`) !== location.hash && !(h === "" && location.hash === "")) {
      history.replaceState(null, "", h ? `#${h}` : location.pathname + location.search);
    }
  }

  function readHash() {
    const h = location.hash.replace(/^#/, "");
    h.split("&").forEach((kv) => {
      if (!kv) { return; }
      const i = kv.indexOf("="), k = kv.slice(0, i), v = decodeURIComponent(kv.slice(i + 1));
      if (k === "q") { state.q = v; }
      if (k === "cat") { state.cat = D.categories.indexOf(v); }
      if (k === "layer") { state.layer = D.layers.indexOf(Number(v)); }
      if (k === "page") { state.page = Math.max(0, (Number(v) || 1) - 1); }
    });
  }

  function afterUpdate(n, ms) {
    window.__lverb.lastRenderMs = ms;
    window.__lverb.matches = n;
    window.__lverb.q = state.q;
    try { saveHash(); } catch (_e) { /* file:// in some viewers forbids history changes */ }
  }

  function setup() {
    window.__lverb = { ready: false };
    const update = imageBrowser(D, {
      ids: { search: "search", category: "category", size: "size", legend: "legend", results: "results", count: "count" },
      pager: "", state, n: N, filter, card, empty: "No image matches.",
      countText: (n) => `${n} of ${N} images`, after: afterUpdate,
    });
    const ls = el("layer");
    D.layers.forEach((l, i) => {
      const o = text("option", D.layerLabels ? `layer ${l}: ${D.layerLabels[i]}` : `layer ${l}`);
      o.value = String(i);
      ls.appendChild(o);
    });
    readHash();
    el("search").value = state.q; el("category").value = String(state.cat); ls.value = String(state.layer);
    el("size").value = String(state.size);
    ls.addEventListener("change", () => { state.layer = Number(ls.value); update(true); });
    el("only").addEventListener("change", () => { state.only = el("only").checked; update(false); });
    update(false);
    window.__lverb.ready = true;
    window.__lverb.readyMs = performance.now();
    document.body.setAttribute("data-ready", "1");
  }
  setup();
})();
