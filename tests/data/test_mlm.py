"""Packing and seeded dynamic masking (15 %, 80/10/10)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasboost.data.mlm import SequencePacker, mask_tokens, masker

PAD, CLS, SEP, MASK, VOCAB = 0, 2, 3, 4, 1000


def pack(docs, length=8, pieces=1):
    """Packs `docs` fed to one SequencePacker in `pieces` parts, as the store's stream feeds it."""
    packer = SequencePacker(length, CLS, SEP, PAD)
    parts = [packer.add(list(chunk))["token_ids"] for chunk in np.array_split(np.array(docs, dtype=object), pieces)]
    return np.concatenate([*parts, packer.finish()["token_ids"]])


def test_packing_fills_rows_with_cls_and_sep():
    docs = [np.arange(10, 20), np.arange(30, 35), np.arange(40, 57), np.arange(60, 64)]
    packed = pack(docs)
    rows = [row[row != PAD] for row in packed]
    assert all(row[0] == CLS and row[-1] == SEP for row in rows)
    assert all(len(row) == 8 for row in rows[:-1]), "only the last row may be padded"
    body = np.concatenate([row[1:-1] for row in rows])
    stream = np.concatenate([docs[0], [SEP], docs[1], [SEP], docs[2], [SEP], docs[3]])
    assert np.array_equal(body, stream)
    short = pack([np.arange(10, 18)])
    assert len(short) == 1, "a tail under half a row is dropped"
    assert len(pack([np.arange(10, 12)])) == 1, "but never the only row"


def test_packing_does_not_depend_on_how_the_stream_is_cut():
    rng = np.random.default_rng(0)
    docs = [rng.integers(5, 100, size=rng.integers(0, 30)) for _ in range(40)]
    whole = pack(docs, length=16)
    for pieces in (2, 7, 40):
        assert np.array_equal(pack(docs, length=16, pieces=pieces), whole)


def random_batch(seed=0, rows=64, length=128):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, size=(rows, length)).astype(np.int32)
    ids[:, 0], ids[:, -1] = CLS, SEP
    ids[: rows // 2, length // 2 :] = PAD  # half of the rows are padded
    return ids


def run_mask(ids, seed, max_predictions=20):
    special = tf.constant([PAD, CLS, SEP, MASK])
    return [
        t.numpy()
        for t in mask_tokens(
            tf.constant(ids), tf.constant([seed, 0], tf.int64), special, VOCAB, MASK, 0.15, max_predictions
        )
    ]


def test_masking_rate_specials_and_weights():
    ids = random_batch()
    corrupted, positions, labels, weights = run_mask(ids, seed=1)
    maskable = ~np.isin(ids, [PAD, CLS, SEP, MASK])
    expected = np.minimum(np.round(maskable.sum(1) * 0.15), 20)
    assert np.array_equal(weights.sum(1), expected)
    for row in range(len(ids)):
        chosen = positions[row][weights[row] > 0]
        assert len(set(chosen)) == len(chosen)
        assert maskable[row, chosen].all(), "special tokens and padding are never masked"
        assert np.array_equal(labels[row][weights[row] > 0], ids[row, chosen])
        untouched = np.setdiff1d(np.arange(ids.shape[1]), chosen)
        assert np.array_equal(corrupted[row, untouched], ids[row, untouched])


def test_80_10_10_replacement():
    ids = random_batch(rows=512)
    corrupted, positions, labels, weights = run_mask(ids, seed=2)
    chosen = weights > 0
    new = np.take_along_axis(corrupted, positions, axis=1)[chosen]
    old = labels[chosen]
    as_mask = np.mean(new == MASK)
    kept = np.mean(new == old)
    assert 0.77 < as_mask < 0.83
    assert 0.08 < kept < 0.13  # 10 % unchanged plus the rare random draw of the same token
    assert 0.07 < 1 - as_mask - kept < 0.12


def test_masking_is_seeded():
    ids = random_batch()
    first, again, other = run_mask(ids, 5), run_mask(ids, 5), run_mask(ids, 6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[1], other[1])


def test_masker_builds_model_inputs():
    ids = random_batch(rows=4, length=16)
    transform = masker(VOCAB, MASK, PAD, [CLS, SEP, MASK], 0.15, 3)
    inputs, labels, weights = transform({"token_ids": tf.constant(ids)}, tf.constant([0, 7], tf.int64))
    assert set(inputs) == {"token_ids", "segment_ids", "padding_mask", "mask_positions"}
    assert inputs["padding_mask"].dtype == tf.int32  # MirroredStrategy cannot distribute bool tensors
    assert np.array_equal(inputs["padding_mask"].numpy(), (ids != PAD).astype(np.int32))
    assert labels.shape == (4, 3) and weights.shape == (4, 3)
