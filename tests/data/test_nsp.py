"""The next-sentence pair builder: balance, true successors, foreign B segments, packing, truncation."""

from __future__ import annotations

import numpy as np
import pytest

from kerasboost.data.nsp import build_pairs, split_segments, truncate_pair

PAD, CLS, SEP = 0, 2, 3


def corpus(num_docs=60, segments=6, length=5):
    """Segment s of document d is made of tokens 1000 * (d + 1) + 10 * s + k: provenance is in the ids."""
    return [[np.arange(length) + 1000 * (d + 1) + 10 * s for s in range(segments)] for d in range(num_docs)]


def parse(row, segment_row):
    real = row[row != PAD]
    first_sep = int(np.argmax(real == SEP))
    a, b = real[1:first_sep], real[first_sep + 1 : -1]
    return real, a, b


def test_labels_are_balanced_and_b_is_next_or_foreign():
    pairs = build_pairs(
        corpus(num_docs=200), sequence_length=16, next_rate=0.5, seed=0, cls_id=CLS, sep_id=SEP, pad_id=PAD
    )
    labels = pairs["next_sentence"]
    assert len(labels) == 200 * 5
    assert abs(labels.mean() - 0.5) < 0.05  # 3 standard deviations of 1000 fair draws
    for row, segments, label in zip(pairs["token_ids"], pairs["segment_ids"], labels):
        real, a, b = parse(row, segments)
        doc_a, seg_a = a[0] // 1000, (a[0] % 1000) // 10
        doc_b, seg_b = b[0] // 1000, (b[0] % 1000) // 10
        if label == 1:
            assert (doc_b, seg_b) == (doc_a, seg_a + 1)
        else:
            assert doc_b != doc_a


def test_packing_segment_ids_and_sep_positions():
    pairs = build_pairs(
        corpus(num_docs=3), sequence_length=16, next_rate=1.0, seed=1, cls_id=CLS, sep_id=SEP, pad_id=PAD
    )
    for row, segments, mask in zip(pairs["token_ids"], pairs["segment_ids"], pairs["padding_mask"]):
        real, a, b = parse(row, segments)
        assert real[0] == CLS and real[-1] == SEP and np.sum(real == SEP) == 2
        n = len(real)
        assert list(segments[:n]) == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert not segments[n:].any() and list(mask) == [1] * n + [0] * (16 - n)


def test_truncation_keeps_both_segments():
    long_docs = [[np.arange(40) + 1000, np.arange(3) + 2000], [np.arange(2) + 3000, np.arange(50) + 4000]]
    pairs = build_pairs(long_docs, sequence_length=12, next_rate=1.0, seed=0, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    for row, segments in zip(pairs["token_ids"], pairs["segment_ids"]):
        real, a, b = parse(row, segments)
        assert len(real) <= 12 and len(a) >= 1 and len(b) >= 1
    a, b = truncate_pair(np.arange(30), np.arange(1), budget=4)
    assert (len(a), len(b)) == (3, 1)
    a, b = truncate_pair(np.arange(1), np.arange(30), budget=2)
    assert (len(a), len(b)) == (1, 1)


def test_pairs_are_seeded():
    first = build_pairs(corpus(), 16, 0.5, seed=3, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    again = build_pairs(corpus(), 16, 0.5, seed=3, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    other = build_pairs(corpus(), 16, 0.5, seed=4, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    assert np.array_equal(first["token_ids"], again["token_ids"])
    assert not np.array_equal(first["next_sentence"], other["next_sentence"])


def test_one_document_cannot_make_negative_pairs():
    with pytest.raises(ValueError, match="at least two"):
        build_pairs(corpus(num_docs=1), 16, 0.5, seed=0, cls_id=CLS, sep_id=SEP, pad_id=PAD)


def test_split_segments():
    text = "Return the value. It may be None!\n\nSecond paragraph without stop\nstill it. e.g. lowercase"
    assert split_segments(text) == [
        "Return the value.",
        "It may be None!",
        "Second paragraph without stop\nstill it. e.g. lowercase",
    ]
