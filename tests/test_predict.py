"""predict's batching of classification texts by length."""

import numpy as np

from kerasboost.predict import length_sorted_batches, padded_width


def test_length_sorted_batches_cover_every_row_once_longest_first():
    lengths = np.array([5, 120, 7, 64, 5, 33, 128, 9])
    batches = length_sorted_batches(lengths, 3)
    assert [len(rows) for rows in batches] == [3, 3, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert [lengths[rows].tolist() for rows in batches] == [[128, 120, 64], [33, 9, 7], [5, 5]]


def test_padded_width_holds_the_longest_row_with_under_8_or_a_quarter_of_padding():
    for longest in range(1, 600):
        width = padded_width(longest, 512)
        assert width == 512 if longest > 512 else longest <= width < longest + max(8, longest / 4), longest


def test_padded_width_gives_a_dozen_widths_up_to_128():
    assert sorted({padded_width(n, 512) for n in range(1, 129)}) == [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128]
