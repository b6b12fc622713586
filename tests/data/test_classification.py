"""Classification data: label names, text encoding, and the macro metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from kerasboost.data.classification import encode_texts, label_names
from kerasboost.errors import DataError
from kerasboost.tasks.classification import confusion_image, confusion_matrix, missing_classes_notice, scores


def test_label_names_are_sorted_and_validation_labels_must_be_known():
    assert label_names(["b", "a", "b"], ["a"]) == ["a", "b"]
    with pytest.raises(DataError, match="validation labels not in the training data: c"):
        label_names(["a", "b"], ["c"])
    with pytest.raises(DataError, match="at least two labels"):
        label_names(["a", "a"], [])


def test_encode_for_bert_and_gpt2():
    bert = encode_texts([np.arange(10, 20), np.array([7])], sequence_length=6, start_id=2, end_id=3, pad_id=0)
    assert bert["token_ids"].tolist() == [[2, 10, 11, 12, 13, 3], [2, 7, 3, 0, 0, 0]]
    assert bert["padding_mask"].tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    gpt2 = encode_texts([np.array([0, 5])], sequence_length=5, start_id=None, end_id=1, pad_id=0)
    assert gpt2["token_ids"].tolist() == [[0, 5, 1, 0, 0]]
    assert gpt2["padding_mask"].tolist() == [[1, 1, 1, 0, 0]], "id 0 can be a real GPT-2 token"


def test_confusion_matrix_and_macro_scores():
    truth = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 0, 2])
    matrix = confusion_matrix(truth, predicted, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    result = scores(matrix)
    precision = np.mean([1 / 2, 2 / 3, 1.0])
    recall = np.mean([1 / 2, 1.0, 1 / 2])
    f1 = np.mean([0.5, 0.8, 2 / 3])
    assert result == pytest.approx({"precision": precision, "recall": recall, "macro_f1": f1})
    image = confusion_image(matrix, cell=4)
    assert image.shape == (1, 12, 12, 3) and image.dtype == np.uint8


def sklearn_macro(truth: np.ndarray, predicted: np.ndarray) -> dict:
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="macro", zero_division=0)
    return {"precision": precision, "recall": recall, "macro_f1": f1}


def test_macro_scores_skip_trained_classes_absent_from_labels_and_predictions():
    """8 trained classes, 5 of them neither in the validation labels nor predicted (the issue's case): the
    average is over the 3 present, as scikit-learn computes it, not dragged down by 5 zeros."""
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
    predicted = np.array([0, 0, 1, 1, 1, 2, 2, 0, 2, 0])
    result = scores(confusion_matrix(truth, predicted, 8))
    assert result == pytest.approx(sklearn_macro(truth, predicted))
    assert result["recall"] == pytest.approx(np.mean([3 / 4, 1.0, 3 / 4]))


@pytest.mark.parametrize("seed", range(20))
def test_macro_scores_agree_with_scikit_learn(seed):
    """Random labels and predictions over 6 classes, some absent from one side or both."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(6, size=rng.integers(2, 6), replace=False)
    truth = rng.choice(classes, size=30)
    predicted = np.where(rng.random(30) < 0.6, truth, rng.integers(0, 6, 30))
    assert scores(confusion_matrix(truth, predicted, 6)) == pytest.approx(sklearn_macro(truth, predicted))


def test_missing_classes_notice_names_how_many():
    names = [f"c{i}" for i in range(8)]
    assert missing_classes_notice(np.array([3, 1, 2, 4, 1, 1, 1, 1]), names) is None
    notice = missing_classes_notice(np.array([3, 0, 2, 0, 0, 0, 0, 1]), names)
    assert notice.startswith(
        "notice: the validation data has no example of 5 of the 8 trained classes (c1, c3, c4, c5, c6)"
    )
    assert "\n" not in notice
