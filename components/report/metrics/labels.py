"""The labels table as the report shows it: how many answers carry each status flag, every category
a caption part is coloured with, and, for the captions a page embeds, their parts with the category
of each. Counted column by column (a run of 100,000 images has about two million distinct captions);
parts are turned into Python objects only for the captions asked for."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...common.contracts import part_category
from ..inputs.tables import CategorizeOutput


@dataclass
class LabelView:
    """The labels (first row of a caption wins): status flags, part categories, parts on demand."""

    status_flags: Counter = field(default_factory=Counter)  # flag -> distinct captions whose status has it
    categories: set[str] = field(default_factory=set)       # every category a caption part has
    table: pa.Table | None = None                           # a row per distinct caption (None: no labels)
    category_map: dict[str, str] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> "LabelView":
        return cls()

    def parts_of(self, captions: list[str]) -> dict[str, list[dict]]:
        """caption -> [{"text", "labels", "category"}] for the ``captions`` that have labels."""
        if self.table is None or not captions:
            return {}
        table = self.table.filter(pc.is_in(self.table.column("caption"), value_set=pa.array(captions, pa.string())))
        return {caption: [{"text": part.get("text") or "", "labels": [x for x in (part.get("labels") or []) if x],
                           "category": part_category(part.get("labels") or [], self.category_map)}
                          for part in parts or []]
                for caption, parts in zip(table.column("caption").to_pylist(), table.column("parts").to_pylist())}


def first_rows(table: pa.Table) -> pa.Table:
    """The first row of each caption (the categorize step writes one; a repeat is ignored)."""
    captions = table.column("caption")
    ids = pc.index_in(captions, value_set=pc.unique(captions)).to_numpy(zero_copy_only=False)
    _, first = np.unique(ids, return_index=True)
    return table if len(first) == table.num_rows else table.take(pa.array(np.sort(first)))


def status_flags(status: pa.ChunkedArray) -> Counter:
    """A status is ``;``-joined flags; every flag the categorize step sets is counted, whatever its name."""
    flags: Counter = Counter()
    for entry in pc.value_counts(status).to_pylist():
        flags.update({flag: entry["counts"] for flag in (entry["values"] or "").split(";") if flag})
    return flags


def part_categories(parts: pa.ChunkedArray, category_map: dict[str, str]) -> set[str]:
    """The category of every caption part (``part_category``: its first label through the map)."""
    labels = pc.struct_field(pc.list_flatten(parts), "labels")
    firsts = pc.list_flatten(pc.list_slice(labels, 0, 1)).unique().to_pylist()
    found = {part_category([first], category_map) for first in firsts}
    if pc.any(pc.equal(pc.fill_null(pc.list_value_length(labels), 0), 0)).as_py():
        found.add(part_category([], category_map))  # a part without labels
    return found


def label_view(categorized: CategorizeOutput | None) -> LabelView:
    """Status flags and part categories of the labels table's first row per caption."""
    if categorized is None:
        return LabelView.empty()
    table = first_rows(categorized.labels)
    return LabelView(status_flags(table.column("status")), part_categories(table.column("parts"),
                                                                           categorized.category_map),
                     table, categorized.category_map)
