"""`kerasboost predict`: a trained run's model on new texts, by its task, as one JSON object per text.

classification: the label and the probability of every label; mlm and bert_pretraining: the top-k fills of
each mask token (the tokenizer's own, e.g. [MASK] or <mask>, written literally in the text) and the text
with the best fills; causal_lm: continuations (generation.py, as after training). Texts are
encoded exactly as the task encodes its training data, and run through the model in batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from kerasboost.architectures import architecture_of
from kerasboost.data.classification import encode_texts
from kerasboost.data.sources import read_documents
from kerasboost.data.tokenizer import tokenize, tokenize_stream
from kerasboost.errors import InputError
from kerasboost.generation import generate, token_generator
from kerasboost.models.causal_lm import detokenize
from kerasboost.recipe import DataConfig
from kerasboost.runner import TrainedRun

# Classification texts are labelled a window of this many batches at a time, each window sorted by length.
WINDOW_BATCHES = 64


@dataclass(frozen=True)
class Sampling:
    """How a causal LM continues a prompt (`predict --strategy ...`)."""

    max_length: int
    strategy: str = "greedy"
    top_k: int = 10
    top_p: float = 0.9
    seed: int = 0


def read_inputs(texts: tuple[str, ...], input_file: str | None, data: DataConfig) -> list[str]:
    """`--text` values, or the texts of `--input` (TXT one per line, JSONL or CSV with the recipe's
    `data.field`); an empty or unreadable input is a one-line error naming the file."""
    if bool(texts) == bool(input_file):
        raise InputError("predict: give --input FILE or one or more --text, not both")
    if texts:
        return list(texts)
    if not Path(input_file).is_file():
        raise InputError(f"--input: file not found: {input_file}")
    per_line = data.model_copy(update={"document_split": "line", "max_documents": None})
    documents, _ = read_documents([input_file], per_line, key="--input")
    return [document.text for document in documents]


def predictions(
    trained: TrainedRun, texts: list[str], batch_size: int, top_k: int, sampling: Sampling
) -> Iterator[dict]:
    """One JSON-ready dict per text, in order."""
    task = trained.recipe.task
    if task == "classification":
        yield from _classify(trained, texts, batch_size)
        return
    if task == "causal_lm":
        yield from _continue(trained, texts, batch_size, sampling)
        return
    for start in range(0, len(texts), batch_size):
        yield from _fill_masks(trained, texts[start : start + batch_size], top_k, first=start + 1)


def write_jsonl(records: Iterator[dict], output: str | None) -> int:
    """Writes `records` to `output` (through a temporary file renamed at the end, so a failure leaves no
    partial file), or to stdout; returns how many."""
    if output is None:
        count = 0
        for record in records:
            print(json.dumps(record, ensure_ascii=False), flush=True)
            count += 1
        return count
    target = Path(output)
    partial = target.with_name(target.name + ".partial")
    count = 0
    try:
        with partial.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return count


def _encoded(trained: TrainedRun, token_ids: list) -> dict[str, np.ndarray]:
    """Model inputs for `token_ids` as the task encodes its texts (start and end ids, truncated, padded)."""
    tokenizer, spec = trained.task.tokenizer, architecture_of(trained.task.backbone)
    start, end = spec.text_ends
    x = encode_texts(
        token_ids,
        trained.recipe.data.sequence_length,
        getattr(tokenizer, start) if start else None,
        getattr(tokenizer, end),
        tokenizer.pad_token_id,
    )
    if spec.segments:
        x["segment_ids"] = np.zeros_like(x["token_ids"])
    return x


def model_inputs(trained: TrainedRun, texts: list[str]) -> dict[str, np.ndarray]:
    """`texts` as a classifier's model inputs (token_ids, padding_mask[, segment_ids]): what an exported
    SavedModel's `serve` takes."""
    return _encoded(trained, tokenize(trained.task.tokenizer, texts))


def _classify(trained: TrainedRun, texts: list[str], batch_size: int) -> Iterator[dict]:
    """Labels, a window of `WINDOW_BATCHES` batches at a time: one tokenizing stream for all texts (a tf.data
    pipeline costs a trace to start), the window's texts batched by length (`length_sorted_batches`), each
    batch trimmed to `padded_width` and run by the model's compiled predict step, the window's records then
    given in input order."""
    names = json.loads(trained.run_dir.labels_file.read_text(encoding="utf-8"))
    window = batch_size * WINDOW_BATCHES
    starts = range(0, len(texts), window)
    tokenized = tokenize_stream(trained.task.tokenizer, (texts[start : start + window] for start in starts), workers=1)
    for start, token_ids in zip(starts, tokenized):
        x = _encoded(trained, token_ids)
        lengths = x["padding_mask"].sum(axis=1)
        probabilities = np.zeros((len(token_ids), len(names)))
        for rows in length_sorted_batches(lengths, batch_size):
            logits = trained.task.model.predict_on_batch(_narrowed(x, rows))
            probabilities[rows] = _softmax(np.asarray(logits, dtype="float64"))
        for text, row in zip(texts[start : start + window], probabilities):
            yield {
                "text": text,
                "label": names[int(row.argmax())],
                "probabilities": {name: round(float(p), 6) for name, p in zip(names, row)},
            }


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices of `batch_size` rows each, longest rows first: texts of similar length share a batch, so
    padding to a batch's longest costs little (a batch of texts in input order pads most of them to the
    longest of all)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def padded_width(longest: int, limit: int) -> int:
    """How wide a batch whose longest row has `longest` tokens is run: rounded up to a multiple of an eighth
    of its power of two (at least 8), at most `limit`. Padding stays under 8 tokens or a quarter, and a
    compiled model sees a dozen widths up to 128."""
    step = max(8, 1 << max(longest.bit_length() - 3, 0))
    return min(-(-longest // step) * step, limit)


def _narrowed(x: dict[str, np.ndarray], rows) -> dict[str, np.ndarray]:
    """`rows` of the model inputs `x`, cut to the `padded_width` of their longest row."""
    x = {key: value[rows] for key, value in x.items()}
    width = padded_width(int(x["padding_mask"].sum(axis=1).max()), x["token_ids"].shape[1])
    return {key: value[:, :width] for key, value in x.items()}


def _fill_masks(trained: TrainedRun, texts: list[str], top_k: int, first: int) -> Iterator[dict]:
    """The top-k fills of each mask of a batch of `texts`, the first of which is text number `first` of the
    input (errors name it so)."""
    tokenizer, spec = trained.task.tokenizer, architecture_of(trained.task.backbone)
    mask_id = tokenizer.mask_token_id
    mask = tokenizer.id_to_token(mask_id)
    split = [text.split(mask) for text in texts]
    for index, pieces in enumerate(split):
        if len(pieces) == 1:
            raise InputError(f"predict: text {first + index} has no {mask} to fill: {texts[index][:60]!r}")
    tokens = iter(tokenize(tokenizer, [piece for pieces in split for piece in pieces]))
    rows = []
    for pieces in split:
        ids = []
        for number in range(len(pieces)):
            ids.extend([mask_id] if number else [])
            ids.extend(int(i) for i in next(tokens))
        rows.append(np.asarray(ids, dtype=np.int32))
    x = _narrowed(_encoded(trained, rows), slice(None))
    positions = [np.flatnonzero(row == mask_id) for row in x["token_ids"]]
    for index, found in enumerate(positions):
        if not len(found):
            raise InputError(f"predict: text {first + index}: its {mask} lies past data.sequence_length")
    slots = np.zeros((len(texts), max(len(found) for found in positions)), dtype=np.int32)
    for row, found in enumerate(positions):
        slots[row, : len(found)] = found
    outputs = trained.task.model({**x, "mask_positions": slots}, training=False)
    logits = keras.ops.convert_to_numpy(outputs["mlm"] if isinstance(outputs, dict) else outputs)
    probabilities = _softmax(logits.astype("float64"))
    for row, (text, found) in enumerate(zip(texts, positions)):
        fills, best = [], x["token_ids"][row].copy()
        for slot, position in enumerate(found):
            top = np.argsort(-probabilities[row, slot])[:top_k]
            fills.append(
                [
                    {
                        "token": tokenizer.id_to_token(int(i)),
                        "probability": round(float(probabilities[row, slot, i]), 6),
                    }
                    for i in top
                ]
            )
            best[position] = top[0]
        body = best[x["padding_mask"][row].astype(bool)]
        if spec.text_ends[0]:
            body = body[1:]
        yield {"text": text, "fills": fills, "filled": detokenize(tokenizer, body[:-1])}


def _continue(trained: TrainedRun, prompts: list[str], batch_size: int, sampling: Sampling) -> Iterator[dict]:
    generator = token_generator(trained.task.backbone, sampling.strategy, sampling.top_k, sampling.top_p)
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        outputs = generate(generator, trained.task.tokenizer, batch, sampling.max_length, sampling.seed)
        for prompt, (text, tokens) in zip(batch, outputs):
            yield {"prompt": prompt, "text": text, "tokens": tokens, "strategy": sampling.strategy}


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)
