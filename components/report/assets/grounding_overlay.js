// Where each caption looks (issue #21): the per-patch maps that grounding_page.py embeds as JSON
// (<script id="grounding-data">), drawn over the image browsers' thumbnails on a canvas (no
// network). The single run's browser (page.js) calls decorate() and the comparison's (compare.js)
// decorateCompare() for every image card they build; a checkbox in each browser's controls shows or
// hides the maps. Inlined as a module script before the browsers' scripts, so it is set when they render.
window.__lverbGrounding = (() => {
  const G = JSON.parse(document.getElementById("grounding-data").textContent);
  const { text } = window.__lverbDom;
  // dark purple -> red -> yellow; a patch's opacity grows with its weight, so the image shows through
  const RAMP = [[40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]];
  const OPACITY = 0.8;

  function colour(v) {
    const x = v * (RAMP.length - 1), k = Math.min(Math.floor(x), RAMP.length - 2), f = x - k;
    return RAMP[k].map((c, n) => Math.round(c + (RAMP[k + 1][n] - c) * f));
  }

  function decode(b64) {
    const s = atob(b64), out = new Uint8Array(s.length);
    for (let p = 0; p < s.length; p++) { out[p] = s.charCodeAt(p); }
    return out;
  }

  // one map (base64, a byte per patch, row-major) on the canvas: a pixel per patch, scaled by CSS
  function paint(canvas, grid, b64) {
    const rows = grid[0], cols = grid[1], q = decode(b64);
    canvas.width = cols;
    canvas.height = rows;
    const ctx = canvas.getContext("2d"), image = ctx.createImageData(cols, rows);
    for (let p = 0; p < q.length; p++) {
      const v = q[p] / 255, rgb = colour(v);
      image.data.set([rgb[0], rgb[1], rgb[2], Math.round(255 * OPACITY * v)], 4 * p);
    }
    ctx.putImageData(image, 0, 0);
    canvas.hidden = false;
  }

  // the canvas covers the part of the thumbnail the model saw: its centre square, or all of it
  function placeOver(img, canvas, view) {
    if (view !== "square") { return; }
    const fit = () => {
      const w = img.naturalWidth, h = img.naturalHeight, s = Math.min(w, h);
      if (!s) { return; }
      canvas.style.left = `${((w - s) / 2 / w) * 100}%`;
      canvas.style.top = `${((h - s) / 2 / h) * 100}%`;
      canvas.style.width = `${(s / w) * 100}%`;
      canvas.style.height = `${(s / h) * 100}%`;
    };
    if (img.complete && img.naturalWidth) { fit(); } else { img.addEventListener("load", fit, { once: true }); }
  }

  // a frame holding the thumbnail (or the map alone when there is none) with a canvas over it
  function frame(img, view) {
    const box = text("div", null, img ? "gmap-frame" : "gmap-frame alone");
    const canvas = document.createElement("canvas");
    canvas.className = "gmap-canvas";
    canvas.hidden = true;
    if (img) {
      box.appendChild(img);
      placeOver(img, canvas, view);
    }
    box.appendChild(canvas);
    return { box, canvas };
  }

  function markRow(card, selector, row) {
    card.querySelectorAll("tr.gmap-shown").forEach((r) => { r.classList.remove("gmap-shown"); });
    const tr = card.querySelector(selector);
    if (tr && row) { tr.classList.add("gmap-shown"); }
  }

  function lastWithMap(maps) {
    let j = maps.length - 1;
    while (j >= 0 && !maps[j]) { j--; }
    return j;
  }

  // the single run's card: the map of the selected layer (layer: index into the layers, -1: all
  // layers shown, then the last layer's map, and the map of the caption the pointer is on)
  function decorate(card, side, i, layer) {
    const S = G.single;
    if (!S) { return; }
    const maps = S.maps[i];
    if (!maps) {
      const why = maps === "" ? "map not in the page (size budget)" : "no map for this image";
      side.insertBefore(text("div", why, "gmap-note gmap"), side.firstChild);
      return;
    }
    card.classList.add("gmap-card");
    const img = side.querySelector("img");
    const { box, canvas } = frame(img, S.view);
    box.classList.add("gmap-holder");
    side.insertBefore(box, side.firstChild);
    const label = text("div", null, "gmap-label gmap");
    box.after(label);
    const show = (j) => {
      if (j < 0 || !maps[j]) {
        canvas.hidden = true;
        label.textContent = j < 0 ? "no map" : `no map at L${S.layers[j]}`;
        return;
      }
      paint(canvas, S.grid, maps[j]);
      label.textContent = `L${S.layers[j]} map · top 10%: ${S.top[i][j]}%`;
      label.title = `${S.labels[j]}: the share of the map its top 10% of patches (${S.topK}) hold`;
      card.setAttribute("data-map-layer", String(S.layers[j]));
      markRow(card, `tr[data-layer="${S.layers[j]}"]`, layer < 0);
    };
    if (layer >= 0) { show(layer); return; }
    show(lastWithMap(maps));
    card.querySelectorAll("tr[data-layer]").forEach((tr) => {
      const j = S.layers.indexOf(Number(tr.getAttribute("data-layer")));
      tr.addEventListener("mouseenter", () => { if (maps[j]) { show(j); } });
    });
  }

  // the comparison's card: both runs' maps side by side, for the depth row the pointer is on
  // (first the deepest row where either run has a map)
  function decorateCompare(card, side, i) {
    const C = G.compare;
    if (!C) { return; }
    card.classList.add("gmap-pair-card");
    const img = side.querySelector("img");
    if (img) { img.classList.add("gmap-off-only"); }
    const pair = text("div", null, "gmap-pair gmap");
    const panes = C.runs.map((run, n) => {
      const pane = text("div", null, "gmap-pane");
      const tag = n ? "B" : "A";
      pane.appendChild(text("div", `${tag}: ${run ? run.name : "no maps in this run"}`, `gmap-run run-${tag.toLowerCase()}`));
      const copy = img ? img.cloneNode() : null;
      if (copy) { copy.classList.remove("gmap-off-only"); copy.alt = `${copy.alt} (${tag})`; }
      const { box, canvas } = frame(copy, run ? run.view : "whole");
      pane.appendChild(box);
      const label = text("div", "", "gmap-label");
      pane.appendChild(label);
      pair.appendChild(pane);
      return { run, maps: run ? run.maps[i] : null, canvas, label };
    });
    side.insertBefore(pair, side.firstChild);
    const show = (k) => {
      C.rows[k].slice(1).forEach((j, n) => {
        const { run, maps, canvas, label } = panes[n];
        canvas.hidden = true;
        if (!run) { label.textContent = ""; return; }
        if (j < 0) { label.textContent = "no layer at this depth"; return; }
        if (!maps) { label.textContent = maps === "" ? "map not in the page" : "no map"; return; }
        if (!maps[j]) { label.textContent = `no map at ${run.labels[j]}`; return; }
        paint(canvas, run.grid, maps[j]);
        label.textContent = `${run.labels[j]} · top 10%: ${run.top[i][j]}%`;
      });
      card.setAttribute("data-map-depth", String(C.rows[k][0]));
      markRow(card, `tr[data-depth="${C.rows[k][0]}"]`, true);
    };
    const hasMap = (k) => C.rows[k].slice(1).some((j, n) => {
      const maps = panes[n].maps;
      return j >= 0 && Boolean(maps) && Boolean(maps[j]);
    });
    let k = C.rows.length - 1;
    while (k > 0 && !hasMap(k)) { k--; }
    show(k);
    card.querySelectorAll("tr[data-depth]").forEach((tr, r) => {
      tr.addEventListener("mouseenter", () => { show(r); });
    });
  }

  // a checkbox in a browser's controls; on (the default) shows the maps
  function addToggle(sectionId, toggleId) {
    const section = document.getElementById(sectionId), controls = section?.querySelector(".controls");
    if (!controls) { return; }
    const label = text("label", null, "gmap-toggle");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = toggleId;
    box.checked = true;
    label.appendChild(box);
    label.appendChild(document.createTextNode(" where the caption looks"));
    label.title = "draw each caption's map over the image (how much each patch moved the caption)";
    controls.appendChild(label);
    section.classList.add("gmaps-on");
    box.addEventListener("change", () => { section.classList.toggle("gmaps-on", box.checked); });
  }

  if (G.single) { addToggle("browser", "grounding-toggle"); }
  if (G.compare) { addToggle("compare-browser", "cmp-grounding-toggle"); }
  return { decorate, decorateCompare };
})();
