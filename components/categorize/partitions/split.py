"""Labelling split over several nodes: the distinct captions in partitions by a hash of their text.

A caption belongs to partition ``int(caption_hash(caption), 16) % count``: identical captions
land in one partition (and are labelled once), and the split is the same in every run and
every process. Each partition is labelled by a categorize task of its own, in a folder of its
own under the labels folder (``<labels>/partition-001-of-003/``, with its own answer store and
write lease), and ``merge.merge_partitions`` then writes the one labels table and the aggregate.

Between the caption loop and the partition loop the caption pointers travel as one file
(``write_collected_captions``): KFP's compiler cannot hand a ``dsl.Collected`` of one
ParallelFor to the tasks of another.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, TypeVar

from ...common.contracts import FailedShard, caption_hash

_NAME = re.compile(r"partition-(\d{3,})-of-(\d{3,})")
Row = TypeVar("Row")


@dataclass(frozen=True)
class Partition:
    """Partition ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition {self.index} of {self.count} does not exist: 0 <= index < count")

    @property
    def name(self) -> str:
        """The partition's folder name and its loop item in the pipeline, e.g. ``partition-001-of-003``."""
        return f"partition-{self.index + 1:03d}-of-{self.count:03d}"

    @classmethod
    def parse(cls, name: str) -> "Partition":
        match = _NAME.fullmatch(str(name).strip())
        if not match:
            raise ValueError(f"partition {name!r} is not a partition name such as partition-001-of-003 "
                             "(the pipeline's partition step makes them)")
        return cls(int(match.group(1)) - 1, int(match.group(2)))

    def holds(self, caption: str) -> bool:
        return int(caption_hash(caption), 16) % self.count == self.index

    def select(self, rows: Iterable[Row], caption_of=lambda row: row.caption) -> list[Row]:
        """The rows whose caption belongs to this partition, in their order."""
        return [row for row in rows if self.holds(caption_of(row))]

    def folder(self, labels_uri: str) -> str:
        from ...common import storage

        return storage.join(labels_uri, self.name)


def all_partitions(count: int) -> list[Partition]:
    return [Partition(i, count) for i in range(count)]


def write_collected_captions(path: str, caption_uris: list[str], failed: list[FailedShard]) -> None:
    """The caption step's pointers, collected into one file (see the module docstring)."""
    with open(path, "w") as f:
        json.dump({"captions": caption_uris, "failed": [bad.to_pointer() for bad in failed]}, f)


def read_collected_captions(path: str) -> tuple[list[str], list[FailedShard]]:
    """(captions URIs of the shards that finished, the shards that failed) from ``write_collected_captions``."""
    with open(path) as f:
        pointer = json.load(f)
    return list(pointer["captions"]), [FailedShard.from_pointer(p) for p in pointer["failed"]]
