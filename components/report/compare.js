// The comparison's image browser: for every image both runs captioned, each run's caption per
// layer side by side, rows aligned by relative depth. Reads the JSON that compare_page.py embeds
// (<script id="compare-data">); inlined into the page as a module script, so the page stays one file.
(() => {
  const D = JSON.parse(document.getElementById("compare-data").textContent);
  const A = D.runs[0], B = D.runs[1], N = D.keys.length;
  const el = (id) => document.getElementById(id);
  const state = { q: "", cat: -1, page: 0, size: 5 };
  const keyLower = D.keys.map((k) => k.toLowerCase());
  const { text, captionNode: partsNode, categorySets } = window.__lverbDom;
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

  let matches = [];
  function filter() {
    const q = state.q.trim().toLowerCase(), out = [];
    for (let i = 0; i < N; i++) { if (imageMatches(i, q)) { out.push(i); } }
    matches = out;
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
    const side = text("div", null, "side");
    if (D.thumbs) {
      if (D.thumbs[i]) {
        const im = document.createElement("img");
        im.alt = D.keys[i];
        im.loading = "lazy";
        im.src = `data:image/jpeg;base64,${D.thumbs[i]}`;
        side.appendChild(im);
      } else { side.appendChild(text("div", "(no image)")); }
    }
    side.appendChild(text("div", D.keys[i], "key"));
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

  function render() {
    const res = el("cmp-results"), pages = Math.max(1, Math.ceil(matches.length / state.size));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    const frag = document.createDocumentFragment();
    const start = state.page * state.size, end = Math.min(matches.length, start + state.size);
    for (let k = start; k < end; k++) { frag.appendChild(card(matches[k])); }
    if (!matches.length) { frag.appendChild(text("div", N ? "No image matches." : "The runs share no image.", "empty")); }
    res.replaceChildren(frag);
    el("cmp-count").textContent = `${matches.length} of ${N} shared images`;
    const pl = `page ${state.page + 1} of ${pages}`;
    document.querySelectorAll(".cmp-pageinfo").forEach((p) => { p.textContent = pl; });
    document.querySelectorAll(".cmp-prev").forEach((b) => { b.disabled = state.page <= 0; });
    document.querySelectorAll(".cmp-next").forEach((b) => { b.disabled = state.page >= pages - 1; });
    el("cmp-legend").querySelectorAll(".chip").forEach((c) => {
      c.classList.toggle("on", Number(c.getAttribute("data-cat")) === state.cat);
    });
    window.__lverbCompare.matches = matches.length;
    window.__lverbCompare.q = state.q;
  }

  function update(resetPage) {
    if (resetPage) { state.page = 0; }
    filter();
    render();
  }

  function setup() {
    window.__lverbCompare = { ready: false };
    const cs = el("cmp-category");
    D.categories.forEach((c, i) => {
      const o = text("option", c);
      o.value = String(i);
      cs.appendChild(o);
      const chip = text("span", null, "chip");
      chip.setAttribute("data-cat", String(i));
      const sw = document.createElement("i");
      sw.style.background = D.colours[i];
      chip.appendChild(sw);
      chip.appendChild(document.createTextNode(c));
      chip.addEventListener("click", () => {
        state.cat = state.cat === i ? -1 : i;
        cs.value = String(state.cat);
        update(true);
      });
      el("cmp-legend").appendChild(chip);
    });
    el("cmp-size").value = String(state.size);
    let timer = null;
    el("cmp-search").addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.q = el("cmp-search").value; update(true); }, N > 2000 ? 120 : 0);
    });
    cs.addEventListener("change", () => { state.cat = Number(cs.value); update(true); });
    el("cmp-size").addEventListener("change", () => { state.size = Number(el("cmp-size").value); update(true); });
    document.querySelectorAll(".cmp-prev").forEach((b) => { b.addEventListener("click", () => { state.page--; update(false); }); });
    document.querySelectorAll(".cmp-next").forEach((b) => { b.addEventListener("click", () => { state.page++; update(false); }); });
    update(false);
    window.__lverbCompare.ready = true;
    document.body.setAttribute("data-compare-ready", "1");
  }
  setup();
})();
