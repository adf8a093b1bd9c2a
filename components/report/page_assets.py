"""The report page's inline CSS and JavaScript (no network: everything ships in the page)."""

CSS = r"""
:root { --fg:#1b1f24; --muted:#5a6270; --line:#d9dde3; --bg:#ffffff; --soft:#f5f7fa; --accent:#1f5fbf; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; color:var(--fg); background:var(--bg); }
header { padding:18px 28px 8px; border-bottom:1px solid var(--line); }
header h1 { margin:0 0 4px; font-size:22px; }
header p { margin:0; color:var(--muted); }
nav { position:sticky; top:0; z-index:5; background:#fffffff0; border-bottom:1px solid var(--line); padding:6px 28px; }
nav a { margin-right:16px; color:var(--accent); text-decoration:none; }
main { padding:0 28px 40px; max-width:1500px; }
section { margin-top:26px; scroll-margin-top:44px; }
#results, .img-card { scroll-margin-top:44px; }
h2 { font-size:18px; margin:0 0 8px; }
.note { color:var(--muted); font-size:13px; margin:4px 0 10px; max-width:1000px; }
.cards { display:flex; flex-wrap:wrap; gap:10px; }
.card { border:1px solid var(--line); border-radius:6px; padding:8px 12px; min-width:150px; background:var(--soft); }
.card .v { font-size:19px; font-weight:600; }
.card .k { color:var(--muted); font-size:12px; }
img.plot { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; background:#fff; }
.scroll { overflow-x:auto; max-width:100%; }
table.data { border-collapse:collapse; font-size:12px; margin:6px 0; }
table.data th, table.data td { border:1px solid var(--line); padding:2px 6px; text-align:right; white-space:nowrap; }
table.data th { background:var(--soft); position:sticky; top:0; }
table.data td.t, table.data th.t { text-align:left; }
details summary { cursor:pointer; color:var(--accent); margin:6px 0; }
.warn { background:#fff4e5; border:1px solid #f0c36d; padding:6px 10px; border-radius:4px; margin:8px 0; }
.controls { display:flex; flex-wrap:wrap; gap:10px; align-items:center; margin:8px 0; padding:8px; background:var(--soft); border:1px solid var(--line); border-radius:6px; }
.controls input[type=search] { width:320px; padding:4px 6px; }
.controls select, .controls button, .controls input { font:inherit; }
#count { color:var(--muted); }
.legend { display:flex; flex-wrap:wrap; gap:4px 6px; margin:6px 0; }
.chip { display:inline-flex; align-items:center; gap:4px; border:1px solid var(--line); border-radius:10px; padding:0 7px; font-size:12px; cursor:pointer; background:#fff; }
.chip i { width:10px; height:10px; border-radius:2px; display:inline-block; }
.chip.on { outline:2px solid var(--accent); }
.img-card { display:grid; grid-template-columns:140px 1fr; gap:12px; border:1px solid var(--line); border-radius:6px; padding:10px; margin:10px 0; }
.img-card.nothumb { grid-template-columns:1fr; }
.img-card .side { font-size:12px; color:var(--muted); word-break:break-all; }
.img-card .side img { width:128px; height:auto; border-radius:4px; display:block; margin-bottom:6px; }
.img-card .key { font-weight:600; color:var(--fg); }
.refs { font-size:12px; color:var(--muted); margin:0 0 6px; }
table.caps { border-collapse:collapse; width:100%; font-size:13px; }
table.caps td { border-top:1px solid #eef0f3; padding:2px 6px; vertical-align:top; }
table.caps td.n { width:44px; text-align:right; color:var(--muted); font-variant-numeric:tabular-nums; white-space:nowrap; }
table.caps tr.hit td { background:#fffbe0; }
table.caps tr.final td { border-bottom:2px solid var(--line); }
span.part { border-radius:3px; padding:0 1px; }
.pager { display:flex; gap:8px; align-items:center; margin:8px 0; }
.empty { color:var(--muted); padding:20px; }
dl.meta { display:grid; grid-template-columns:max-content 1fr; gap:2px 14px; font-size:13px; margin:6px 0; }
dl.meta dt { color:var(--muted); }
dl.meta dd { margin:0; word-break:break-word; }
pre { background:var(--soft); border:1px solid var(--line); padding:8px; overflow:auto; max-height:320px; font-size:12px; }
"""

JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var L = D.layers.length, N = D.images.keys.length;
  var capLower = D.captions.map(function (c) { return c.toLowerCase(); });
  var keyLower = D.images.keys.map(function (k) { return k.toLowerCase(); });
  var el = function (id) { return document.getElementById(id); };
  var state = { q: "", cat: -1, layer: -1, only: false, page: 0, size: 20 };

  // caption index -> set of category indices it contains
  var capCats = D.spans.map(function (s) {
    var m = {};
    for (var i = 2; i < s.length; i += 4) { m[s[i]] = true; }
    return m;
  });

  function text(tag, t, cls) {
    var e = document.createElement(tag);
    if (t !== undefined && t !== null) { e.textContent = String(t); }
    if (cls) { e.className = cls; }
    return e;
  }

  function captionNode(ci) {
    var c = D.captions[ci], s = D.spans[ci], out = document.createElement("span"), pos = 0;
    for (var i = 0; i < s.length; i += 4) {
      var a = s[i], b = s[i + 1], cat = s[i + 2], lab = s[i + 3];
      if (a > pos) { out.appendChild(document.createTextNode(c.slice(pos, a))); }
      var sp = text("span", c.slice(a, b), "part");
      sp.style.background = D.colours[cat] + "55";
      sp.style.boxShadow = "inset 0 -2px 0 " + D.colours[cat];
      sp.title = D.categories[cat] + (D.labelSets[lab] ? " (" + D.labelSets[lab] + ")" : "");
      out.appendChild(sp);
      pos = b;
    }
    if (pos < c.length) { out.appendChild(document.createTextNode(c.slice(pos))); }
    if (!c.length) { out.appendChild(text("i", "(empty caption)")); }
    return out;
  }

  function rowMatches(ci, q) {
    if (ci < 0) { return false; }
    if (state.cat >= 0 && !capCats[ci][state.cat]) { return false; }
    if (q && capLower[ci].indexOf(q) < 0) { return false; }
    return true;
  }

  var matches = [];
  function filter() {
    var q = state.q.trim().toLowerCase(), out = [];
    var lo = state.layer >= 0 ? state.layer : 0, hi = state.layer >= 0 ? state.layer + 1 : L;
    var noFilter = !q && state.cat < 0;
    for (var i = 0; i < N; i++) {
      var base = i * L, ok = false;
      if (noFilter) {
        for (var j = lo; j < hi && !ok; j++) { ok = D.images.cap[base + j] >= 0; }
      } else {
        var keyHit = q && state.cat < 0 && keyLower[i].indexOf(q) >= 0;
        for (var j2 = lo; j2 < hi && !ok; j2++) {
          var ci = D.images.cap[base + j2];
          ok = ci >= 0 && (keyHit || rowMatches(ci, q));
        }
      }
      if (ok) { out.push(i); }
    }
    matches = out;
  }

  function fmt(v, d) { return v < 0 ? "" : (v / 100).toFixed(d); }

  function card(i) {
    var q = state.q.trim().toLowerCase();
    var thumbs = D.images.thumbs;
    var box = text("div", null, "img-card" + (thumbs ? "" : " nothumb"));
    box.setAttribute("data-key", D.images.keys[i]);
    var side = text("div", null, "side");
    if (thumbs) {
      if (thumbs[i]) {
        var im = document.createElement("img");
        im.alt = D.images.keys[i];
        im.loading = "lazy";
        im.src = "data:image/jpeg;base64," + thumbs[i];
        side.appendChild(im);
      } else { side.appendChild(text("div", "(no image)")); }
    }
    side.appendChild(text("div", D.images.keys[i], "key"));
    side.appendChild(text("div", "shard " + D.images.shards[D.images.shard[i]]));
    var settle = D.images.settle[i];
    side.appendChild(text("div", settle === null ? "caption never settles" : "settles at layer " + settle));
    var body = document.createElement("div");
    if (D.images.refs && D.images.refs[i] && D.images.refs[i].length) {
      body.appendChild(text("div", "references: " + D.images.refs[i].join(" | "), "refs"));
    }
    var t = text("table", null, "caps");
    var lo = state.layer >= 0 ? state.layer : 0, hi = state.layer >= 0 ? state.layer + 1 : L;
    var filtering = q || state.cat >= 0;
    for (var j = lo; j < hi; j++) {
      var ci = D.images.cap[i * L + j];
      if (ci < 0) { continue; }
      var hit = filtering && rowMatches(ci, q);
      if (state.only && filtering && !hit) { continue; }
      var tr = document.createElement("tr");
      if (hit) { tr.className = "hit"; }
      if (j === L - 1) { tr.className += " final"; }
      tr.setAttribute("data-layer", D.layers[j]);
      tr.appendChild(text("td", "L" + D.layers[j], "n"));
      var td = text("td", null, "c");
      td.appendChild(captionNode(ci));
      tr.appendChild(td);
      var e = text("td", fmt(D.images.ent[i * L + j], 2), "n");
      e.title = "entropy (bits per token)";
      tr.appendChild(e);
      var f = text("td", fmt(D.images.f1[i * L + j], 2), "n");
      f.title = "token F1 vs the last layer's caption";
      tr.appendChild(f);
      t.appendChild(tr);
    }
    body.appendChild(t);
    box.appendChild(side);
    box.appendChild(body);
    return box;
  }

  function render() {
    var t0 = performance.now();
    var res = el("results"), pages = Math.max(1, Math.ceil(matches.length / state.size));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    var frag = document.createDocumentFragment();
    var start = state.page * state.size, end = Math.min(matches.length, start + state.size);
    for (var k = start; k < end; k++) { frag.appendChild(card(matches[k])); }
    if (!matches.length) { frag.appendChild(text("div", "No image matches.", "empty")); }
    res.replaceChildren(frag);
    el("count").textContent = matches.length + " of " + N + " images";
    var pl = "page " + (state.page + 1) + " of " + pages;
    document.querySelectorAll(".pageinfo").forEach(function (p) { p.textContent = pl; });
    document.querySelectorAll(".prev").forEach(function (b) { b.disabled = state.page <= 0; });
    document.querySelectorAll(".next").forEach(function (b) { b.disabled = state.page >= pages - 1; });
    document.querySelectorAll(".chip").forEach(function (c) {
      c.classList.toggle("on", Number(c.getAttribute("data-cat")) === state.cat);
    });
    window.__lverb.lastRenderMs = performance.now() - t0;
    window.__lverb.matches = matches.length;
    window.__lverb.q = state.q;
  }

  function saveHash() {
    var p = [];
    if (state.q) { p.push("q=" + encodeURIComponent(state.q)); }
    if (state.cat >= 0) { p.push("cat=" + encodeURIComponent(D.categories[state.cat])); }
    if (state.layer >= 0) { p.push("layer=" + D.layers[state.layer]); }
    if (state.page) { p.push("page=" + (state.page + 1)); }
    var h = p.join("&");
    if (("#" + h) !== location.hash && !(h === "" && location.hash === "")) {
      history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
    }
  }

  function readHash() {
    var h = location.hash.replace(/^#/, "");
    h.split("&").forEach(function (kv) {
      if (!kv) { return; }
      var i = kv.indexOf("="), k = kv.slice(0, i), v = decodeURIComponent(kv.slice(i + 1));
      if (k === "q") { state.q = v; }
      if (k === "cat") { state.cat = D.categories.indexOf(v); }
      if (k === "layer") { state.layer = D.layers.indexOf(Number(v)); }
      if (k === "page") { state.page = Math.max(0, (Number(v) || 1) - 1); }
    });
  }

  function update(resetPage) {
    if (resetPage) { state.page = 0; }
    filter();
    render();
    try { saveHash(); } catch (e) { /* file:// in some viewers forbids history changes */ }
  }

  function setup() {
    window.__lverb = { ready: false };
    var cs = el("category"), ls = el("layer");
    D.categories.forEach(function (c, i) {
      var o = text("option", c); o.value = String(i); cs.appendChild(o);
      var chip = text("span", null, "chip");
      chip.setAttribute("data-cat", String(i));
      var sw = document.createElement("i"); sw.style.background = D.colours[i];
      chip.appendChild(sw); chip.appendChild(document.createTextNode(c));
      chip.addEventListener("click", function () {
        state.cat = state.cat === i ? -1 : i; cs.value = String(state.cat); update(true);
      });
      el("legend").appendChild(chip);
    });
    D.layers.forEach(function (l, i) { var o = text("option", "layer " + l); o.value = String(i); ls.appendChild(o); });
    readHash();
    el("search").value = state.q; cs.value = String(state.cat); ls.value = String(state.layer);
    el("size").value = String(state.size);
    var timer = null;
    el("search").addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { state.q = el("search").value; update(true); }, N > 2000 ? 120 : 0);
    });
    cs.addEventListener("change", function () { state.cat = Number(cs.value); update(true); });
    ls.addEventListener("change", function () { state.layer = Number(ls.value); update(true); });
    el("only").addEventListener("change", function () { state.only = el("only").checked; update(false); });
    el("size").addEventListener("change", function () { state.size = Number(el("size").value); update(true); });
    document.querySelectorAll(".prev").forEach(function (b) { b.addEventListener("click", function () { state.page--; update(false); }); });
    document.querySelectorAll(".next").forEach(function (b) { b.addEventListener("click", function () { state.page++; update(false); }); });
    update(false);
    window.__lverb.ready = true;
    window.__lverb.readyMs = performance.now();
    document.body.setAttribute("data-ready", "1");
  }
  setup();
})();
"""
