// The comparison's image browser: for every image both runs captioned, each run's caption per
// layer side by side, rows aligned by relative depth. Reads the JSON that compare/sections.py embeds
// (<script id="compare-data">); search, category filter, legend and paging are browser_common.js's.
// Inlined into the page as a module script, so the page stays one file.
(() => {
  const D = JSON.parse(document.getElementById("compare-data").textContent);
  const A = D.runs[0], B = D.runs[1], N = D.keys.length;
  const el = (id) => document.getElementById(id);
  const state = { q: "", cat: -1, page: 0, size: 5 };
  const keyLower = D.keys.map((k) => k.toLowerCase());
  const { text, captionNode: partsNode, categorySets, imageSide, imageBrowser } = window.__lverbDom;
  for (const run of D.runs) {
    run.nLayers = run.layers.length;
    run.lower = run.captions.map((c) => c.toLowerCase());
    run.cats = categorySets(run.spans);
  }

  function captionNode(run, ci) { return partsNode(run.captions[ci], run.spans[ci], D); }

  function captionMatches(run, ci, q) {
    if (ci < 0) { return false; }
    if (state.cat >= 0 && !run.cats[ci][state.cat]) { return false; }
    return !q || run.lower[ci].indexOf(q) >= 0;
  }

  function imageMatches(i, q) {
    if (!q && state.cat < 0) { return true; }
    if (q && state.cat < 0 && keyLower[i].indexOf(q) >= 0) { return true; }
    for (const run of D.runs) {
      for (let j = 0; j < run.nLayers; j++) {
        if (captionMatches(run, run.cap[i * run.nLayers + j], q)) { return true; }
      }
    }
    return false;
  }

  function filter() {
    const q = state.q.trim().toLowerCase(), out = [];
    for (let i = 0; i < N; i++) { if (imageMatches(i, q)) { out.push(i); } }
    return out;
  }

  function runCells(tr, run, i, j, q) {
    if (j < 0) {
      tr.appendChild(text("td", "", "n"));
      tr.appendChild(text("td", "", "c none"));
      tr.appendChild(text("td", "", "n"));
      return false;
    }
    const ci = run.cap[i * run.nLayers + j];
    const label = text("td", run.labels[j], "n lab");
    label.title = `${run.name}: ${run.labels[j]}, relative depth ${run.depths[j].toFixed(2)}`;
    tr.appendChild(label);
    const td = text("td", null, "c");
    if (ci >= 0) { td.appendChild(captionNode(run, ci)); } else { td.appendChild(text("i", "(no caption)")); }
    tr.appendChild(td);
    const ent = run.ent[i * run.nLayers + j];
    const e = text("td", ent < 0 ? "" : (ent / 100).toFixed(2), "n");
    e.title = "entropy (bits per token)";
    tr.appendChild(e);
    const hit = (q || state.cat >= 0) && captionMatches(run, ci, q);
    if (hit) { td.classList.add("hit"); }
    return hit;
  }

  function card(i) {
    const q = state.q.trim().toLowerCase();
    const box = text("div", null, `img-card${D.thumbs ? "" : " nothumb"}`);
    box.setAttribute("data-key", D.keys[i]);
    const side = imageSide(D.thumbs, i, D.keys[i]);
    const body = document.createElement("div");
    const t = text("table", null, "caps compare");
    const head = document.createElement("tr");
    head.appendChild(text("th", "depth", "n"));
    head.appendChild(text("th", `A: ${A.name}`, "run-a"));
    head.lastChild.colSpan = 3;
    head.appendChild(text("th", `B: ${B.name}`, "run-b"));
    head.lastChild.colSpan = 3;
    t.appendChild(head);
    for (const [depth, ja, jb] of D.rows) {
      const tr = document.createElement("tr");
      tr.setAttribute("data-depth", String(depth));
      tr.appendChild(text("td", depth.toFixed(2), "n"));
      const hitA = runCells(tr, A, i, ja, q);
      const hitB = runCells(tr, B, i, jb, q);
      if (hitA || hitB) { tr.classList.add("hit"); }
      t.appendChild(tr);
    }
    body.appendChild(t);
    box.appendChild(side);
    box.appendChild(body);
    window.__lverbGrounding?.decorateCompare(box, side, i);  // both runs' caption maps, when a run has them
    return box;
  }

  function setup() {
    window.__lverbCompare = { ready: false };
    const update = imageBrowser(D, {
      ids: { search: "cmp-search", category: "cmp-category", size: "cmp-size", legend: "cmp-legend",
             results: "cmp-results", count: "cmp-count" },
      pager: "cmp-", state, n: N, filter, card, empty: N ? "No image matches." : "The runs share no image.",
      countText: (n) => `${n} of ${N} shared images`,
      after: (n) => { window.__lverbCompare.matches = n; window.__lverbCompare.q = state.q; },
    });
    el("cmp-size").value = String(state.size);
    update(false);
    window.__lverbCompare.ready = true;
    document.body.setAttribute("data-compare-ready", "1");
  }
  setup();
})();
