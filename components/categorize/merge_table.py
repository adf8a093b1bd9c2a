"""The label -> category merge table (``data/merged_categories.yaml``, the study's 35
categories; or a user's own file): the one parser of it."""

from __future__ import annotations

import os

from ..common.contracts import UNKNOWN
from .labelset import DATA_DIR, read_yaml

DEFAULT_MERGE = os.path.join(DATA_DIR, "merged_categories.yaml")


def load_merge_table(uri: str | None = None) -> dict[str, str]:
    """``{label: category}`` from a YAML ``{category: [labels...]}``.

    A label listed under two categories is an error naming the label, both categories and
    the file (which one the study meant cannot be guessed). An empty entry (``-`` or ``""``)
    stands for the study's empty first label."""
    uri = uri or DEFAULT_MERGE
    data, _ = read_yaml(uri)
    category_of: dict[str, str] = {}
    for category, labels in data.items():
        if labels is not None and not isinstance(labels, list):
            raise ValueError(f"merge table {uri}: category {category!r} must list its labels (category: [label, ...])")
        for label in labels or []:
            label = "" if label is None else str(label)
            if label in category_of and category_of[label] != str(category):
                raise ValueError(f"merge table {uri}: label {label!r} is listed under both {category_of[label]!r} "
                                 f"and {category!r}: keep it under one category")
            category_of[label] = str(category)
    return category_of


def merge_categories(category_of: dict[str, str]) -> list[str]:
    """All categories of a merge table, sorted, UNKNOWN included."""
    return sorted(set(category_of.values()) | {UNKNOWN})
