"""Embedding: recall@k of retrieval by embedding, a query's neighbours judged by their labels.

Each query's hit at k (one of its k nearest gallery embeddings shares its label) is decided per
query, so the comparison is ``paired_per_sample`` on the hits. By default every sample is a query
against all the others (leave one out, as the CUB and SOP retrieval benchmarks do); a
``gallery`` mask splits queries from a fixed gallery instead. Each model embeds both sides.
Queries without a same-label sample in the gallery have no answer and are left out.
Similarity is cosine by default (``euclidean`` optional); ties go to the lower gallery index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from precision_sweep.errors import UserInputError
from precision_sweep.metrics.tasks.paired import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    MetricComparison,
    paired_per_sample,
)

DISTANCES = ("cosine", "euclidean")
# Query rows scored against the gallery at once: bounds the similarity matrix's memory.
_CHUNK_ELEMENTS = 1 << 22


def check(labels: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``(n,)`` and embeddings ``(n, dims)`` (flattened beyond the first axis) as arrays; a
    UserInputError where they do not fit."""
    labels, outputs = np.asarray(labels), np.asarray(outputs, dtype=np.float64)
    if labels.ndim != 1 or outputs.ndim < 2 or len(outputs) != len(labels):
        raise UserInputError(
            f"Retrieval needs one identity label per sample and one embedding per sample, but the "
            f"labels have shape {labels.shape} and the outputs {outputs.shape}. Give the dataset one "
            "label (class or identity) per sample and read the model's embedding output."
        )
    return labels, outputs.reshape(len(outputs), -1)


def _ranks(labels: np.ndarray, embeddings: np.ndarray, gallery: np.ndarray | None, distance: str):
    """Each query's rank of its best same-label gallery item (0: the nearest; -1: there is none)
    and the queries' sample indices."""
    if distance not in DISTANCES:
        raise UserInputError(f"Unknown retrieval distance {distance!r}: choose from {list(DISTANCES)}.")
    if distance == "cosine":
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        embeddings = embeddings / np.where(norms > 0, norms, 1)
    n = len(labels)
    if gallery is None:
        queries, items = np.arange(n), np.arange(n)
    else:
        gallery = np.asarray(gallery, dtype=bool)
        queries, items = np.flatnonzero(~gallery), np.flatnonzero(gallery)
    ranks = np.full(len(queries), -1, np.int64)
    g, g_labels = embeddings[items], labels[items]
    squared = np.sum(g * g, axis=1)
    step = max(1, _CHUNK_ELEMENTS // max(len(items), 1))
    for start in range(0, len(queries), step):
        q = queries[start:start + step]
        with np.errstate(invalid="ignore", over="ignore"):
            similarity = embeddings[q] @ g.T
            if distance == "euclidean":
                similarity = 2 * similarity - squared[None, :]  # -|q-g|^2 up to a per-query constant
        # a non-finite embedding (an overflowed variant) is never retrieved and retrieves nothing
        similarity[~np.isfinite(similarity)] = -np.inf
        lost = ~np.isfinite(embeddings[q]).all(axis=1)
        similarity[q[:, None] == items[None, :]] = -np.inf  # a query never retrieves itself
        positive = (labels[q][:, None] == g_labels[None, :]) & (q[:, None] != items[None, :])
        has = positive.any(axis=1)
        best = np.argmax(np.where(positive, similarity, -np.inf), axis=1)  # the first best: lowest index
        best_score = similarity[np.arange(len(q)), best][:, None]
        before = (similarity > best_score) | ((similarity == best_score) & (np.arange(len(items))[None, :] < best[:, None]))
        ranks[start:start + step] = np.where(has, np.where(lost, len(items), before.sum(axis=1)), -1)
    return ranks, queries


def hits(labels: np.ndarray, outputs: np.ndarray, k: int = 1, *, gallery: np.ndarray | None = None,
         distance: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """``(hit, query)``: for each sample that is an answerable query (its index in ``query``),
    whether a same-label gallery item is among its ``k`` nearest."""
    ranks, queries = answerable_ranks(labels, outputs, gallery=gallery, distance=distance)
    return ranks < _checked_k(k), queries


def answerable_ranks(labels: np.ndarray, outputs: np.ndarray, *, gallery: np.ndarray | None = None,
                     distance: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """``(rank, query)``: each answerable query's rank of its best same-label gallery item
    (0: the nearest), and its sample index. Which queries are answerable depends on the labels
    and the gallery only, so two models answer the same queries."""
    labels, outputs = check(labels, outputs)
    ranks, queries = _ranks(labels, outputs, gallery, distance)
    answerable = ranks >= 0
    if not answerable.any():
        raise UserInputError(
            f"No query has another sample with its label in the gallery ({len(queries)} queries, "
            f"{len(np.unique(labels))} labels), so recall@k is undefined. Evaluate on a set with at "
            "least two samples per identity, or give a gallery that holds each query's identity."
        )
    return ranks[answerable], queries[answerable]


def _checked_k(k: int) -> int:
    if int(k) < 1:
        raise UserInputError(f"recall@k needs k of 1 or more, not {k}: set the task's k to e.g. [1, 5].")
    return int(k)


def recall_at_k(labels: np.ndarray, outputs: np.ndarray, k: int = 1, **options) -> float:
    """Fraction of answerable queries with a same-label item among their ``k`` nearest."""
    return float(np.mean(hits(labels, outputs, k, **options)[0]))


def compare(
    labels: np.ndarray,
    outputs: np.ndarray,
    baseline_outputs: np.ndarray,
    *,
    k: Sequence[int] = (1,),
    gallery: np.ndarray | None = None,
    distance: str = "cosine",
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[MetricComparison, ...]:
    """recall@k of the variant against the baseline for each k (the first is the task's primary
    metric); both models answer the same queries."""
    options = dict(gallery=gallery, distance=distance)
    variant, _ = answerable_ranks(labels, outputs, **options)
    reference, _ = answerable_ranks(labels, baseline_outputs, **options)
    return tuple(
        paired_per_sample(f"recall_at_{top}", variant < _checked_k(top), reference < _checked_k(top),
                          higher_is_better=True, confidence=confidence, n_resamples=n_resamples, seed=seed)
        for top in k
    )
