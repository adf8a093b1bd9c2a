"""Caption similarity: token F1, BLEU and CIDEr-D, written out here (no Java, no downloads).

BLEU-4 (corpus level) and CIDEr-D follow the MSCOCO caption evaluation code
(``coco-caption`` / ``pycocoevalcap``): BLEU with the "closest" reference length for the
brevity penalty, CIDEr-D with n = 1..4, TF-IDF over the evaluated set's references,
clipped counts, a Gaussian length penalty (sigma 6) and the factor 10.
One difference, said wherever the numbers are shown: coco-caption tokenises with the
Java PTB tokenizer; here captions are lower-cased and split on anything that is not a
letter, digit or apostrophe (punctuation dropped, as the PTB step does for COCO).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable, Sequence

_TOKEN = re.compile(r"[a-z0-9']+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    """Counts of the ``n``-token runs of ``tokens`` (as tuples)."""
    return Counter(zip(*(tokens[k:] for k in range(n))))


def token_f1(candidate: Sequence[str], reference: Sequence[str]) -> float:
    """Bag-of-words F1 between two token lists (1.0 for two empty ones)."""
    if not candidate and not reference:
        return 1.0
    if not candidate or not reference:
        return 0.0
    common = sum((Counter(candidate) & Counter(reference)).values())
    if common == 0:
        return 0.0
    p = common / len(candidate)
    r = common / len(reference)
    return 2 * p * r / (p + r)


class NgramCache:
    """n-gram counts (n = 1..4) per token sequence, computed once per distinct caption while the
    cache holds it; with a ``limit``, it starts afresh when it holds that many (flat memory)."""

    def __init__(self, n: int = 4, limit: int | None = None):
        self.n = n
        self.limit = limit
        self._cache: dict[tuple, list[Counter]] = {}

    def __call__(self, tokens: Sequence[str]) -> list[Counter]:
        key = tuple(tokens)
        got = self._cache.get(key)
        if got is None:
            if self.limit is not None and len(self._cache) >= self.limit:
                self._cache.clear()
            got = self._cache[key] = [ngrams(key, k) for k in range(1, self.n + 1)]
        return got


def merge_references(refs: Sequence[list[Counter]]) -> list[Counter]:
    """Per n, the max count of every n-gram over the references (BLEU's clipping counts)."""
    if len(refs) == 1:
        return refs[0]
    out: list[Counter] = []
    for k in range(len(refs[0])):
        m: Counter = Counter()
        for r in refs:
            for g, cnt in r[k].items():
                if cnt > m[g]:
                    m[g] = cnt
        out.append(m)
    return out


class BleuAccumulator:
    """Corpus BLEU as coco-caption computes it, fed one (candidate, references) pair at a time."""

    def __init__(self, n: int = 4):
        self.n = n
        self.guess = [0] * n
        self.correct = [0] * n
        self.test_len = 0
        self.ref_len = 0
        self.items = 0

    def add(self, cand_len: int, cand: list[Counter], ref_lens: Sequence[int], ref_max: list[Counter]) -> None:
        self.items += 1
        self.test_len += cand_len
        if ref_lens:
            # "closest" reference length; ties go to the shorter one
            self.ref_len += min((abs(r - cand_len), r) for r in ref_lens)[1]
        for k in range(self.n):
            self.guess[k] += max(0, cand_len - k)
            mk = ref_max[k]
            self.correct[k] += sum(min(cnt, mk[g]) for g, cnt in cand[k].items() if g in mk)

    def scores(self) -> list[float]:
        """[BLEU-1, ..., BLEU-n]; zeros for an empty corpus."""
        if not self.items:
            return [0.0] * self.n
        tiny, small = 1e-15, 1e-9
        out, bleu = [], 1.0
        for k in range(self.n):
            bleu *= (self.correct[k] + tiny) / (self.guess[k] + small)
            out.append(bleu ** (1.0 / (k + 1)))
        ratio = (self.test_len + tiny) / (self.ref_len + small)
        if ratio < 1:
            out = [x * math.exp(1 - 1 / ratio) for x in out]
        return out


def corpus_bleu(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], n: int = 4,
                cache: NgramCache | None = None) -> list[float]:
    """BLEU-1..n over a corpus, as coco-caption computes it.

    ``candidates[i]`` is a token list, ``references[i]`` a list of token lists. Returns
    ``[BLEU-1, ..., BLEU-n]``. An empty corpus gives zeros.
    """
    cache = cache or NgramCache(n)
    acc = BleuAccumulator(n)
    for cand, refs in zip(candidates, references):
        ref_max = merge_references([cache(r) for r in refs]) if refs else [Counter() for _ in range(n)]
        acc.add(len(cand), cache(cand), [len(r) for r in refs], ref_max)
    return acc.scores()


class CiderD:
    """CIDEr-D against fixed references: document frequencies and reference vectors are
    computed once, then any number of candidate sets (e.g. one per layer) are scored.

    The document frequencies come from the references of this set (as in coco-caption),
    so an item's score depends on the set it is scored with.
    """

    def __init__(self, references: Sequence[Sequence[Sequence[str]]], n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        ref_counts = [[_all_ngrams(r, n) for r in refs] for refs in references]
        self.df: Counter = Counter()
        for refs in ref_counts:
            for g in set(g for r in refs for g in r):
                self.df[g] += 1
        self.log_n = math.log(float(max(len(references), 1)))
        self.refs = [[(len(r), *self._vec(c)) for r, c in zip(refs, counts)]
                     for refs, counts in zip(references, ref_counts)]

    def _vec(self, counts: Counter):
        v: list[dict] = [{} for _ in range(self.n)]
        norm = [0.0] * self.n
        for g, tf in counts.items():
            k = len(g) - 1
            val = float(tf) * (self.log_n - math.log(max(1.0, self.df[g])))
            v[k][g] = val
            norm[k] += val * val
        return v, [math.sqrt(x) for x in norm]

    def score_one(self, i: int, cand: Sequence[str]) -> float:
        """CIDEr-D of a candidate for item ``i`` of the references."""
        n = self.n
        vc, nc = self._vec(_all_ngrams(cand, n))
        score = [0.0] * n
        refs = self.refs[i]
        for r_len, vr, nr in refs:
            delta = float(len(cand) - r_len)
            penalty = math.exp(-(delta ** 2) / (2 * self.sigma ** 2))
            for k in range(n):
                val = 0.0
                rk = vr[k]
                for g, x in vc[k].items():
                    y = rk.get(g)
                    if y is not None:
                        val += min(x, y) * y
                if nc[k] != 0 and nr[k] != 0:
                    val /= nc[k] * nr[k]
                score[k] += val * penalty
        return sum(score) / n / max(len(refs), 1) * 10.0


def cider_d(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]],
            n: int = 4, sigma: float = 6.0) -> tuple[float, list[float]]:
    """CIDEr-D of each candidate against its references; returns (mean, per-item scores)."""
    if not candidates:
        return 0.0, []
    scorer = CiderD(references, n, sigma)
    scores = [scorer.score_one(i, c) for i, c in enumerate(candidates)]
    return sum(scores) / len(scores), scores


def _all_ngrams(tokens: Sequence[str], n: int) -> Counter:
    out: Counter = Counter()
    for k in range(1, n + 1):
        out.update(ngrams(tokens, k))
    return out


def first_stable_index(values: Iterable[float], threshold: float) -> int | None:
    """Index from which every value is >= threshold (None if the last one is below)."""
    values = list(values)
    first = None
    for i in range(len(values) - 1, -1, -1):
        if values[i] >= threshold:
            first = i
        else:
            break
    return first
