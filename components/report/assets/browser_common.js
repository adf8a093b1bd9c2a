// What both image browsers of the report page (page.js, compare.js) build their rows from: an
// element with text, a caption with its labelled parts highlighted, and the categories each
// caption holds. Inlined once, as a classic script, before the module scripts that use it.
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

  return { text, captionNode, categorySets };
})();
