// What both image browsers of the report page (run_browser.js, compare_browser.js) are made of: an
// element with text, a caption with its labelled parts highlighted, the categories each caption
// holds, an image's thumbnail and key, and the browsing itself (category select and legend, search,
// page size, pagers, one page of cards). Inlined once, as a classic script, before the module
// scripts that use it.
window.__lverbDom = (() => {
  function text(tag, t, cls) {
    const e = document.createElement(tag);
    if (t !== undefined && t !== null) { e.textContent = String(t); }
    if (cls) { e.className = cls; }
    return e;
  }

  // c: the caption; s: its parts as flat [start, end, category, label set] runs; D: the page's
  // data with the category names, colours and label sets the indices refer to.
  function captionNode(c, s, D) {
    const out = document.createElement("span");
    let pos = 0;
    for (let i = 0; i < s.length; i += 4) {
      const a = s[i], b = s[i + 1], cat = s[i + 2], lab = s[i + 3];
      if (a > pos) { out.appendChild(document.createTextNode(c.slice(pos, a))); }
      const sp = text("span", c.slice(a, b), "part");
      sp.style.background = `${D.colours[cat]}55`;
      sp.style.boxShadow = `inset 0 -2px 0 ${D.colours[cat]}`;
      sp.title = D.categories[cat] + (D.labelSets[lab] ? ` (${D.labelSets[lab]})` : "");
      out.appendChild(sp);
      pos = b;
    }
    if (pos < c.length) { out.appendChild(document.createTextNode(c.slice(pos))); }
    if (!c.length) { out.appendChild(text("i", "(empty caption)")); }
    return out;
  }

  // per caption: the set of category indices its parts carry
  function categorySets(spans) {
    return spans.map((s) => {
      const m = {};
      for (let i = 2; i < s.length; i += 4) { m[s[i]] = true; }
      return m;
    });
  }

  // The side of an image's card: its thumbnail (when the page has thumbnails) and its key.
  function imageSide(thumbs, i, key) {
    const side = text("div", null, "side");
    if (thumbs) {
      if (thumbs[i]) {
        const im = document.createElement("img");
        im.alt = key;
        im.loading = "lazy";
        im.src = `data:image/jpeg;base64,${thumbs[i]}`;
        side.appendChild(im);
      } else { side.appendChild(text("div", "(no image)")); }
    }
    side.appendChild(text("div", key, "key"));
    return side;
  }

  // A category's option in the select and its chip in the legend; a click on the chip toggles the filter.
  function addCategory(D, i, select, legend, state, update) {
    const o = text("option", D.categories[i]);
    o.value = String(i);
    select.appendChild(o);
    const chip = text("span", null, "chip");
    chip.setAttribute("data-cat", String(i));
    const sw = document.createElement("i");
    sw.style.background = D.colours[i];
    chip.appendChild(sw);
    chip.appendChild(document.createTextNode(D.categories[i]));
    chip.addEventListener("click", () => {
      state.cat = state.cat === i ? -1 : i;
      select.value = String(state.cat);
      update(true);
    });
    legend.appendChild(chip);
  }

  // One page of the matching images: the cards, the count, both pagers and the legend's chosen chip.
  function renderPage(o, matches) {
    const byId = (id) => document.getElementById(id);
    const state = o.state, pages = Math.max(1, Math.ceil(matches.length / state.size));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    const frag = document.createDocumentFragment();
    const start = state.page * state.size, end = Math.min(matches.length, start + state.size);
    for (let k = start; k < end; k++) { frag.appendChild(o.card(matches[k])); }
    if (!matches.length) { frag.appendChild(text("div", o.empty, "empty")); }
    byId(o.ids.results).replaceChildren(frag);
    byId(o.ids.count).textContent = o.countText(matches.length);
    const info = `page ${state.page + 1} of ${pages}`;
    document.querySelectorAll(`.${o.pager}pageinfo`).forEach((p) => { p.textContent = info; });
    document.querySelectorAll(`.${o.pager}prev`).forEach((b) => { b.disabled = state.page <= 0; });
    document.querySelectorAll(`.${o.pager}next`).forEach((b) => { b.disabled = state.page >= pages - 1; });
    byId(o.ids.legend).querySelectorAll(".chip").forEach((c) => {
      c.classList.toggle("on", Number(c.getAttribute("data-cat")) === state.cat);
    });
  }

  // An image browser: the category select and legend, the search box (debounced on large pages), the
  // page size and the prev/next buttons, wired to o.state ({q, cat, page, size}). o.ids: the element
  // ids {search, category, size, legend, results, count}; o.pager: the class prefix of the pagers'
  // prev/next/pageinfo; o.n: images in all; o.filter(): the indices of the matching images;
  // o.card(i): an image's card; o.empty: the text when none matches; o.countText(n): the count line;
  // o.after(n, ms): called after each update with the matches and the milliseconds the page took.
  // Returns update(resetPage), which filters and renders again.
  function imageBrowser(D, o) {
    const byId = (id) => document.getElementById(id);
    const state = o.state;
    function update(resetPage) {
      const t0 = performance.now();
      if (resetPage) { state.page = 0; }
      const matches = o.filter();
      renderPage(o, matches);
      o.after(matches.length, performance.now() - t0);
    }
    const select = byId(o.ids.category), search = byId(o.ids.search), size = byId(o.ids.size);
    D.categories.forEach((_c, i) => { addCategory(D, i, select, byId(o.ids.legend), state, update); });
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.q = search.value; update(true); }, o.n > 2000 ? 120 : 0);
    });
    select.addEventListener("change", () => { state.cat = Number(select.value); update(true); });
    size.addEventListener("change", () => { state.size = Number(size.value); update(true); });
    document.querySelectorAll(`.${o.pager}prev`).forEach((b) => {
      b.addEventListener("click", () => { state.page--; update(false); });
    });
    document.querySelectorAll(`.${o.pager}next`).forEach((b) => {
      b.addEventListener("click", () => { state.page++; update(false); });
    });
    return update;
  }

  return { text, captionNode, categorySets, imageSide, imageBrowser };
})();
