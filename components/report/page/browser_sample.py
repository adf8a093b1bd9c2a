"""Which images a page's image browser embeds. A self-contained page cannot hold every caption of
a large run (100,000 images x 24 layers is about two million distinct captions): above a limit it
embeds a fixed sample, and the full per-image table is written beside the page."""

from __future__ import annotations

import hashlib

BROWSER_IMAGES = 10_000   # the default limit: a page of 5-20 MB without thumbnails (more distinct captions: more)
SAMPLE_SEED = "lverb-browser-sample-1"


def _rank(key: str) -> bytes:
    return hashlib.blake2b(f"{SAMPLE_SEED}\0{key}".encode(), digest_size=8).digest()


def browser_sample(keys: list[str], limit: int | None) -> list[int]:
    """The indices (ascending) of the images the browser embeds: every image when there are at most
    ``limit`` (None: no limit), else the ``limit`` images whose keys rank first by a seeded hash. The
    sample is fixed: the same images at every build, whatever the order of the tables; a key's rank is
    its own, so the sample of a subset of the images keeps the subset's images of the full sample."""
    if limit is not None and limit < 1:
        raise ValueError(f"--browser-images {limit}: use at least 1 (or leave it out for the default, "
                         f"{BROWSER_IMAGES:,})")
    if limit is None or len(keys) <= limit:
        return list(range(len(keys)))
    ranked = sorted(range(len(keys)), key=lambda i: _rank(keys[i]))
    return sorted(ranked[:limit])


def sample_note(shown: int, total: int, where: str) -> str:
    """The sentence a page says when its browser shows a sample ("" when it shows every image);
    ``where``: where every image's captions are."""
    if shown >= total:
        return ""
    return (f"This page embeds the captions of {shown:,} of the {total:,} images, a fixed sample (the images whose "
            f"keys rank first by a seeded hash: the same at every build); search and filters work within it. "
            f"Every image's captions are in {where}.")
