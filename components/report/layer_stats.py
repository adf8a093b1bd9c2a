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

    @classmethod
    def from_table(cls, table: pa.Table) -> "CaptionGrid":
        keys = table.column("image_key").to_pylist()
        layers_col = table.column("layer").to_pylist()
        shards_col = table.column("shard").to_pylist()
        layers = sorted(set(layers_col))
        lidx = {layer: i for i, layer in enumerate(layers)}
        kidx: dict[str, int] = {}
        shards: list[str] = []
        for k, s in zip(keys, shards_col):
            if k not in kidx:
                kidx[k] = len(kidx)
                shards.append(s)
        rows = np.full((len(kidx), len(layers)), -1, dtype=np.int64)
        dup = 0
        for r, (k, layer) in enumerate(zip(keys, layers_col)):
            i, j = kidx[k], lidx[layer]
            if rows[i, j] >= 0:
                dup += 1
                continue
            rows[i, j] = r
        return cls(
            layers=layers,
            image_keys=list(kidx),
            shards=shards,
            rows=rows,
            captions=table.column("caption").to_pylist(),
            entropy=table.column("entropy_bits").to_numpy(zero_copy_only=False).astype(float),
            n_tokens=table.column("n_tokens").to_numpy(zero_copy_only=False),
            stops=table.column("stop").to_pylist(),
            duplicates=dup,
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


def _pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if a.size else float("nan")


def compute_layer_stats(grid: CaptionGrid, references: dict[str, list[str]] | None = None,
                        close_threshold: float = 0.5) -> LayerStats:
    tok_cache: dict[str, list[str]] = {}
    bag_cache: dict[str, Counter] = {}

    def toks(text: str) -> list[str]:
        t = tok_cache.get(text)
        if t is None:
            t = tok_cache[text] = tokenize(text)
        return t

    def bag(text: str) -> Counter:
        b = bag_cache.get(text)
        if b is None:
            b = bag_cache[text] = Counter(toks(text))
        return b

    def f1(a: str, b: str) -> float:
        if a == b:
            return 1.0
        ba, bb = bag(a), bag(b)
        na, nb = sum(ba.values()), sum(bb.values())
        if na == 0 and nb == 0:
            return 1.0
        common = sum((ba & bb).values())
        if common == 0:
            return 0.0
        p, r = common / na, common / nb
        return 2 * p * r / (p + r)

    n_img, n_lay = grid.rows.shape
    ent = {k: [] for k in ("mean", "std", "p10", "p25", "median", "p75", "p90")}
    n_caps, uniq = [], []
    for j in range(n_lay):
        r = grid.rows[:, j]
        r = r[r >= 0]
        e = grid.entropy[r]
        e = e[np.isfinite(e)]
        ent["mean"].append(float(e.mean()) if e.size else float("nan"))
        ent["std"].append(float(e.std()) if e.size else float("nan"))
        for name, q in (("p10", 10), ("p25", 25), ("median", 50), ("p75", 75), ("p90", 90)):
            ent[name].append(_pct(e, q))
        n_caps.append(int(r.size))
        uniq.append(len({grid.captions[i] for i in r}))

    # distance to the final (last-layer) caption
    row_f1 = np.full(len(grid.captions), np.nan)
    final_col = grid.rows[:, -1]
    f1_means, bleu_final = [], []
    stays: list[int | None] = []
    f1_img = np.full((n_img, n_lay), np.nan)
    grams = NgramCache()
    for j in range(n_lay):
        vals = []
        acc = BleuAccumulator()
        for i in range(n_img):
            r, fr = grid.rows[i, j], final_col[i]
            if r < 0 or fr < 0:
                continue
            c, fc = grid.captions[r], grid.captions[fr]
            v = f1(c, fc)
            row_f1[r] = v
            f1_img[i, j] = v
            vals.append(v)
            ct, ft = toks(c), toks(fc)
            acc.add(len(ct), grams(ct), [len(ft)], grams(ft))
        f1_means.append(float(np.mean(vals)) if vals else float("nan"))
        bleu_final.append(acc.scores()[3] if acc.items else float("nan"))
    for i in range(n_img):
        present = [j for j in range(n_lay) if not math.isnan(f1_img[i, j])]
        if not present:
            stays.append(None)
            continue
        k = first_stable_index([f1_img[i, j] for j in present], close_threshold)
        stays.append(grid.layers[present[k]] if k is not None else None)

    stats = LayerStats(
        layers=grid.layers, entropy=ent, n_captions=n_caps, unique_captions=uniq,
        f1_to_final=f1_means, bleu4_to_final=bleu_final, row_f1=row_f1, stays_close=stays,
        close_threshold=close_threshold,
    )

    if references:
        with_refs = [i for i, k in enumerate(grid.image_keys) if references.get(k)]
        if with_refs:
            ref_toks = [[toks(t) for t in references[grid.image_keys[i]]] for i in with_refs]
            scorer = CiderD(ref_toks)
            ref_max = [merge_references([grams(t) for t in rt]) for rt in ref_toks]
            ref_lens = [[len(t) for t in rt] for rt in ref_toks]
            bleu_r, cider_r = [], []
            for j in range(n_lay):
                acc = BleuAccumulator()
                scores = []
                for pos, i in enumerate(with_refs):
                    r = grid.rows[i, j]
                    if r < 0:
                        continue
                    c = toks(grid.captions[r])
                    acc.add(len(c), grams(c), ref_lens[pos], ref_max[pos])
                    scores.append(scorer.score_one(pos, c))
                bleu_r.append(acc.scores()[3] if acc.items else float("nan"))
                cider_r.append(float(np.mean(scores)) if scores else float("nan"))
            stats.bleu4_to_refs, stats.cider_to_refs = bleu_r, cider_r
            stats.n_with_refs = len(with_refs)
    return stats
