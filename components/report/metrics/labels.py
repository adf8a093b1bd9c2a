"""The labels table as the report shows it: per distinct caption its parts with the category
each is coloured with, and how many answers carry each status flag."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ...common.contracts import part_category
from ..inputs.tables import CategorizeOutput


@dataclass
class LabelView:
    """The labels table as the page shows it: per distinct caption its parts with their
    category, and how many answers carry each status flag."""

    parts: dict[str, list[dict]]   # caption -> [{"text", "labels", "category"}]
    status_flags: Counter          # flag -> distinct captions whose status has it ("ok" included)

    @classmethod
    def empty(cls) -> "LabelView":
        return cls({}, Counter())


def label_view(categorized: CategorizeOutput | None) -> LabelView:
    """Parts per caption (first row of a caption wins) and status flags counted one by one:
    a status is ``;``-joined flags, and every flag the categorize step sets is counted,
    whatever its name."""
    if categorized is None:
        return LabelView.empty()
    view = LabelView.empty()
    table = categorized.labels
    for caption, parts, status in zip(table.column("caption").to_pylist(), table.column("parts").to_pylist(),
                                      table.column("status").to_pylist()):
        if caption in view.parts:
            continue
        view.status_flags.update(flag for flag in (status or "").split(";") if flag)
        view.parts[caption] = [
            {"text": part.get("text") or "", "labels": [x for x in (part.get("labels") or []) if x],
             "category": part_category(part.get("labels") or [], categorized.category_map)}
            for part in parts or []
        ]
    return view
