"""task: classification — a classifier head on any backbone, labels from the data."""

from __future__ import annotations

import json

import keras
import numpy as np
import tensorflow as tf

from kerasboost.architectures import architecture
from kerasboost.data.classification import label_transform
from kerasboost.data.prepare import PreparedData
from kerasboost.models.backbone import build_backbone
from kerasboost.models.classifier import build_classifier
from kerasboost.models.losses import sparse_cross_entropy
from kerasboost.tasks.task import Task, batches


def build_model(recipe, vocabulary_size: int, labels: list[str] | None = None):
    """The backbone and a classifier of `labels` on it."""
    backbone = build_backbone(recipe.model, vocabulary_size)
    return backbone, build_classifier(backbone, len(labels), recipe.model.classifier_dropout)


def prepare(recipe, run, data: PreparedData):
    names = data.labels
    run.labels_file.write_text(json.dumps(names, indent=1) + "\n", encoding="utf-8")
    tokenizer = data.tokenizer
    spec = architecture(recipe.model.backbone)
    validation = data.store.split("validation")
    backbone, model = build_model(recipe, tokenizer.vocabulary_size(), names)
    counts = np.bincount(validation.head()["label"], minlength=len(names))
    summary = [
        data.describe("texts"),
        f"labels: {len(names)} ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''}) -> {run.labels_file} · "
        f"majority-class validation accuracy {counts.max() / counts.sum():.3f}",
        f"tokenizer: {tokenizer.vocabulary_size()} tokens",
    ]
    notice = missing_classes_notice(counts, names)
    if notice:
        summary.append(notice)
    return Task(
        tokenizer,
        batches(data, label_transform(spec.segments), recipe.data.sequence_length),
        backbone,
        model,
        loss=sparse_cross_entropy(recipe.train.label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        summary=summary,
        perplexity_of=None,
        extra_metrics=lambda model, dataset, log, step: classification_metrics(model, dataset, names, log, step),
    )


def classification_metrics(model, dataset, names: list[str], log, step: int) -> dict:
    """Macro precision, recall and F1 from the confusion matrix; the matrix goes to TensorBoard as an image."""
    truth, predicted = [], []
    for inputs, labels, _ in dataset.as_numpy_iterator():
        logits = model.predict_on_batch(inputs)
        truth.append(np.asarray(labels))
        predicted.append(np.argmax(keras.ops.convert_to_numpy(logits), axis=-1))
    matrix = confusion_matrix(np.concatenate(truth), np.concatenate(predicted), len(names))
    log.image("confusion_matrix", step, confusion_image(matrix))
    return scores(matrix)


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """matrix[t, p] = how many examples of class t were predicted as p."""
    return np.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def scores(matrix: np.ndarray) -> dict:
    """Macro-averaged precision, recall and F1 over the classes present in the labels or the predictions
    (scikit-learn's default): a trained class that neither occurs nor is predicted has no score, rather
    than a zero that would drag the average down. A class predicted but never right has precision 0."""
    true_positives = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    present = (predicted > 0) | (actual > 0)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)[present]
    recall = np.divide(true_positives, actual, out=np.zeros_like(true_positives), where=actual > 0)[present]
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return {"precision": float(precision.mean()), "recall": float(recall.mean()), "macro_f1": float(f1.mean())}


def missing_classes_notice(counts: np.ndarray, names: list[str]) -> str | None:
    """One line when the validation labels lack some of the trained classes (`counts`: examples per class)."""
    missing = [name for name, count in zip(names, counts) if count == 0]
    if not missing:
        return None
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    return (
        f"notice: the validation data has no example of {len(missing)} of the {len(names)} trained classes ({shown}); "
        "macro precision, recall and F1 average over the classes present in its labels or the predictions"
    )


def confusion_image(matrix: np.ndarray, cell: int = 24) -> np.ndarray:
    """The row-normalised matrix as a (1, H, W, 3) uint8 heat map: dark is 0, bright is all of the row."""
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    pixels = np.kron(share, np.ones((cell, cell)))
    image = np.stack([pixels, pixels**0.5, 1 - pixels], axis=-1) * 255
    return tf.cast(image[None], tf.uint8).numpy()
