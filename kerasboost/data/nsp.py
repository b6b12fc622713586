"""Sentence pairs for next-sentence prediction, as in the original BERT.

Documents are split into segments (sentences, or blank-line blocks); segment A is followed by its true
successor (label 1) or by a random segment of another document (label 0), then packed as
`[CLS] A [SEP] B [SEP]` with segment ids 0 then 1. Pairs are drawn once, seeded; MLM masking is applied
on top per batch by the shared pipeline.
"""

from __future__ import annotations

import re

import numpy as np

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(`])|\n\s*\n")


def split_segments(text: str) -> list[str]:
    """Sentences and paragraphs of `text`, stripped, without empty ones."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def truncate_pair(a: np.ndarray, b: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Trims the longer of A and B from its end until both fit in `budget` tokens; each keeps one at least."""
    while len(a) + len(b) > budget:
        if len(a) >= len(b):
            a = a[:-1]
        else:
            b = b[:-1]
    return a, b


def build_pairs(
    documents: list[list[np.ndarray]],
    sequence_length: int,
    next_rate: float,
    seed: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
) -> dict[str, np.ndarray]:
    """token_ids, segment_ids, padding_mask (N, sequence_length) and next_sentence labels (N,).

    `documents` holds each document's tokenised segments; each consecutive (A, next) gives one pair.
    """
    rng = np.random.default_rng(seed)
    donors = [index for index, segments in enumerate(documents) if segments]
    if len(donors) < 2:
        raise ValueError("next-sentence pairs need at least two non-empty documents")
    rows, segments_ids, labels = [], [], []
    for index, segments in enumerate(documents):
        for position in range(len(segments) - 1):
            if rng.random() < next_rate:
                b, label = segments[position + 1], 1
            else:
                other = index
                while other == index:
                    other = donors[rng.integers(len(donors))]
                b, label = documents[other][rng.integers(len(documents[other]))], 0
            a, b = truncate_pair(segments[position], b, sequence_length - 3)
            rows.append(np.concatenate([[cls_id], a, [sep_id], b, [sep_id]]))
            segments_ids.append(np.concatenate([np.zeros(len(a) + 2), np.ones(len(b) + 1)]))
            labels.append(label)
    token_ids = np.full((len(rows), sequence_length), pad_id, dtype=np.int32)
    segment_ids = np.zeros((len(rows), sequence_length), dtype=np.int32)
    for row, (ids, segs) in enumerate(zip(rows, segments_ids)):
        token_ids[row, : len(ids)] = ids
        segment_ids[row, : len(segs)] = segs
    return {
        "token_ids": token_ids,
        "segment_ids": segment_ids,
        "padding_mask": (token_ids != pad_id).astype(np.int32),
        "next_sentence": np.asarray(labels, dtype=np.int32),
    }


class PairBuilder:
    """Sentence pairs from a stream of documents (each a list of tokenised segments), `chunk` documents at a
    time: a random B comes from another document of the same chunk, as Google's create_pretraining_data
    draws it from the same shard. Each chunk is seeded by (seed, chunk number), so the pairs do not depend on
    how the stream was batched."""

    def __init__(self, sequence_length: int, next_rate: float, seed, ids: tuple[int, int, int], chunk: int = 1000):
        self.sequence_length, self.next_rate, self.seed, self.ids, self.chunk = (
            sequence_length,
            next_rate,
            seed,
            ids,
            chunk,
        )
        self._documents: list[list[np.ndarray]] = []
        self._chunks = 0

    def add(self, documents: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
        self._documents.extend(documents)
        parts = []
        while len(self._documents) >= 2 * self.chunk:
            parts.append(self._pairs(self._documents[: self.chunk]))
            del self._documents[: self.chunk]
        return _concatenated(parts)

    def finish(self) -> dict[str, np.ndarray]:
        documents, self._documents = self._documents, []
        if sum(1 for segments in documents if segments) < 2:
            if self._chunks == 0:
                raise ValueError("next-sentence pairs need at least two non-empty documents")
            return {}
        return self._pairs(documents)

    def _pairs(self, documents: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
        seed = [*np.atleast_1d(self.seed).tolist(), self._chunks]
        self._chunks += 1
        pairs = build_pairs(documents, self.sequence_length, self.next_rate, seed, *self.ids)
        return {
            "token_ids": pairs["token_ids"],
            "segment_ids": pairs["segment_ids"].astype(np.uint8),
            "padding_mask": pairs["padding_mask"].astype(np.uint8),
            "next_sentence": pairs["next_sentence"].astype(np.uint8),
        }


def _concatenated(parts: list[dict]) -> dict[str, np.ndarray]:
    if not parts:
        return {}
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
