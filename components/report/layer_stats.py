"""Per-layer numbers from the captions table: entropy, distance to the final caption,
agreement with reference captions, and the layer from which an image's caption stays close."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .text_metrics import BleuAccumulator, CiderD, NgramCache, first_stable_index, merge_references, tokenize


@dataclass
class CaptionGrid:
    """The captions table as an (image x layer) grid of row numbers (-1: missing)."""

    layers: list[int]
    image_keys: list[str]
    shards: list[str]            # per image
    rows: np.ndarray             # [n_images, n_layers] int, row index into the columns below
    captions: list[str]          # per row
    entropy: np.ndarray          # per row, float
    n_tokens: np.ndarray         # per row
    stops: list[str]             # per row
    duplicates: int = 0          # (image, layer) rows seen twice; the first one is kept
    # keys found in more than one shard -> those shards; each (key, shard) is its own image,
    # named ``key (shard)`` in ``image_keys``
    collisions: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: pa.Table) -> "CaptionGrid":
        keys = table.column("image_key").to_pylist()
        shard_of_row = table.column("shard").to_pylist()
        layer_of_row = table.column("layer").to_pylist()
        layers = sorted(set(layer_of_row))
        layer_index = {layer: j for j, layer in enumerate(layers)}
        shards_of_key: dict[str, dict[str, None]] = {}
        for key, shard in zip(keys, shard_of_row):
            shards_of_key.setdefault(key, {})[shard] = None
        collisions = {k: list(s) for k, s in shards_of_key.items() if len(s) > 1}
        ids = [f"{k} ({s})" if k in collisions else k for k, s in zip(keys, shard_of_row)] if collisions else keys
        image_index: dict[str, int] = {}
        shards: list[str] = []
        for image_id, shard in zip(ids, shard_of_row):
            if image_id not in image_index:
                image_index[image_id] = len(image_index)
                shards.append(shard)
        rows = np.full((len(image_index), len(layers)), -1, dtype=np.int64)
        duplicates = 0
        for row, (image_id, layer) in enumerate(zip(ids, layer_of_row)):
            i, j = image_index[image_id], layer_index[layer]
            if rows[i, j] >= 0:
                duplicates += 1
                continue
            rows[i, j] = row
        return cls(
            layers=layers,
            image_keys=list(image_index),
            shards=shards,
            rows=rows,
            captions=table.column("caption").to_pylist(),
            entropy=table.column("entropy_bits").to_numpy(zero_copy_only=False).astype(float),
            n_tokens=table.column("n_tokens").to_numpy(zero_copy_only=False),
            stops=table.column("stop").to_pylist(),
            duplicates=duplicates,
            collisions=collisions,
        )


@dataclass
class LayerStats:
    layers: list[int]
    entropy: dict[str, list[float]]          # mean, std, p10, p25, median, p75, p90 per layer
    n_captions: list[int]                    # per layer
    unique_captions: list[int]               # per layer
    f1_to_final: list[float]                 # mean token F1 vs the image's last-layer caption
    bleu4_to_final: list[float]              # corpus BLEU-4 vs the last-layer captions
    bleu4_to_refs: list[float] | None = None  # corpus BLEU-4 vs reference captions
    cider_to_refs: list[float] | None = None  # CIDEr-D vs reference captions
    n_with_refs: int = 0
    row_f1: np.ndarray | None = None         # per row of the table: F1 vs final (NaN: no final)
    stays_close: list[int | None] = field(default_factory=list)  # per image: first layer from which F1 >= threshold
    close_threshold: float = 0.5


ENTROPY_PERCENTILES = (("p10", 10), ("p25", 25), ("median", 50), ("p75", 75), ("p90", 90))


class TokenCache:
    """Tokens and token bags of caption texts, each computed once (a caption repeats across
    images and layers), and the token F1 between two texts."""

    def __init__(self) -> None:
        self._tokens: dict[str, list[str]] = {}
        self._bags: dict[str, Counter] = {}

    def tokens(self, text: str) -> list[str]:
        found = self._tokens.get(text)
        if found is None:
            found = self._tokens[text] = tokenize(text)
        return found

    def bag(self, text: str) -> Counter:
        found = self._bags.get(text)
        if found is None:
            found = self._bags[text] = Counter(self.tokens(text))
        return found

    def f1(self, text: str, other: str) -> float:
        if text == other:
            return 1.0
        bag, other_bag = self.bag(text), self.bag(other)
        n, n_other = sum(bag.values()), sum(other_bag.values())
        if n == 0 and n_other == 0:
            return 1.0
        common = sum((bag & other_bag).values())
        if common == 0:
            return 0.0
        precision, recall = common / n, common / n_other
        return 2 * precision * recall / (precision + recall)


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def entropy_by_layer(grid: CaptionGrid) -> tuple[dict[str, list[float]], list[int], list[int]]:
    """Per layer: the entropy summary (mean, std, percentiles), the caption count, the distinct captions."""
    entropy: dict[str, list[float]] = {k: [] for k in ("mean", "std", *(name for name, _ in ENTROPY_PERCENTILES))}
    n_captions, unique = [], []
    for j in range(len(grid.layers)):
        rows = grid.rows[:, j]
        rows = rows[rows >= 0]
        values = grid.entropy[rows]
        values = values[np.isfinite(values)]
        entropy["mean"].append(float(values.mean()) if values.size else float("nan"))
        entropy["std"].append(float(values.std()) if values.size else float("nan"))
        for name, q in ENTROPY_PERCENTILES:
            entropy[name].append(_percentile(values, q))
        n_captions.append(int(rows.size))
        unique.append(len({grid.captions[r] for r in rows}))
    return entropy, n_captions, unique


@dataclass
class DistanceToFinal:
    f1_means: list[float]        # per layer: mean token F1 to the image's last-layer caption
    bleu4: list[float]           # per layer: corpus BLEU-4 against the last-layer captions
    row_f1: np.ndarray           # per captions row (NaN: the image has no final caption)
    image_f1: np.ndarray         # [n_images, n_layers] (NaN: missing)


def distance_to_final(grid: CaptionGrid, cache: TokenCache, grams: NgramCache) -> DistanceToFinal:
    n_images, n_layers = grid.rows.shape
    row_f1 = np.full(len(grid.captions), np.nan)
    image_f1 = np.full((n_images, n_layers), np.nan)
    final_rows = grid.rows[:, -1]
    f1_means, bleu4 = [], []
    for j in range(n_layers):
        values = []
        bleu = BleuAccumulator()
        for i in range(n_images):
            row, final_row = grid.rows[i, j], final_rows[i]
            if row < 0 or final_row < 0:
                continue
            caption, final = grid.captions[row], grid.captions[final_row]
            row_f1[row] = image_f1[i, j] = value = cache.f1(caption, final)
            values.append(value)
            tokens, final_tokens = cache.tokens(caption), cache.tokens(final)
            bleu.add(len(tokens), grams(tokens), [len(final_tokens)], grams(final_tokens))
        f1_means.append(float(np.mean(values)) if values else float("nan"))
        bleu4.append(bleu.scores()[3] if bleu.items else float("nan"))
    return DistanceToFinal(f1_means, bleu4, row_f1, image_f1)


def settling_layers(grid: CaptionGrid, image_f1: np.ndarray, threshold: float) -> list[int | None]:
    """Per image: the first layer from which its caption stays close (F1 >= ``threshold``) to the final one."""
    settles: list[int | None] = []
    for scores in image_f1:
        present = [j for j, v in enumerate(scores) if not math.isnan(v)]
        first = first_stable_index([scores[j] for j in present], threshold) if present else None
        settles.append(grid.layers[present[first]] if first is not None else None)
    return settles


def agreement_with_references(grid: CaptionGrid, references: dict[str, list[str]], cache: TokenCache,
                              grams: NgramCache) -> tuple[list[float], list[float], int] | None:
    """Per layer: corpus BLEU-4 and mean CIDEr-D against the images' reference captions, and how
    many images have references (None: none has)."""
    with_refs = [i for i, k in enumerate(grid.image_keys) if references.get(k)]
    if not with_refs:
        return None
    ref_tokens = [[cache.tokens(t) for t in references[grid.image_keys[i]]] for i in with_refs]
    cider = CiderD(ref_tokens)
    ref_max_counts = [merge_references([grams(t) for t in refs]) for refs in ref_tokens]
    ref_lengths = [[len(t) for t in refs] for refs in ref_tokens]
    bleu4, cider_d = [], []
    for j in range(len(grid.layers)):
        bleu = BleuAccumulator()
        scores = []
        for position, i in enumerate(with_refs):
            row = grid.rows[i, j]
            if row < 0:
                continue
            tokens = cache.tokens(grid.captions[row])
            bleu.add(len(tokens), grams(tokens), ref_lengths[position], ref_max_counts[position])
            scores.append(cider.score_one(position, tokens))
        bleu4.append(bleu.scores()[3] if bleu.items else float("nan"))
        cider_d.append(float(np.mean(scores)) if scores else float("nan"))
    return bleu4, cider_d, len(with_refs)


def compute_layer_stats(grid: CaptionGrid, references: dict[str, list[str]] | None = None,
                        close_threshold: float = 0.5) -> LayerStats:
    cache, grams = TokenCache(), NgramCache()
    entropy, n_captions, unique = entropy_by_layer(grid)
    distance = distance_to_final(grid, cache, grams)
    stats = LayerStats(
        layers=grid.layers, entropy=entropy, n_captions=n_captions, unique_captions=unique,
        f1_to_final=distance.f1_means, bleu4_to_final=distance.bleu4, row_f1=distance.row_f1,
        stays_close=settling_layers(grid, distance.image_f1, close_threshold), close_threshold=close_threshold,
    )
    agreement = agreement_with_references(grid, references, cache, grams) if references else None
    if agreement is not None:
        stats.bleu4_to_refs, stats.cider_to_refs, stats.n_with_refs = agreement
    return stats
