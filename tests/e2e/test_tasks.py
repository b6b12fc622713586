"""Whole runs of every task with tiny models, on each backend: pretrain BERT (MLM + NSP), fine-tune a
classifier from that run, evaluate it, and train a GPT-2 causal LM that generates text."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import BACKENDS, explain, kerasboost, overrides, python
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.e2e

TOPIC_WORDS = {
    "network": ["socket", "connection", "server", "client", "request", "address", "port"],
    "files": ["file", "directory", "path", "read", "write", "open", "name"],
    "numbers": ["number", "integer", "float", "decimal", "value", "digits", "round"],
}


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def write_topics_csv(path: Path, rows: int = 240) -> Path:
    """A small separable labelled set: each text mixes the words of its topic with common words."""
    rng = random.Random(0)
    lines = ["text,label"]
    for index in range(rows):
        label = list(TOPIC_WORDS)[index % 3]
        words = rng.sample(TOPIC_WORDS[label], 4) + rng.sample(["the", "a", "of", "is", "to", "and", "for"], 3)
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module", params=BACKENDS)
def runs(request, tmp_path_factory):
    """A pretraining run and a classification run fine-tuned from it, on one backend."""
    backend = request.param
    root = tmp_path_factory.mktemp(f"tasks-{backend}")
    pretrain = root / "pretrain"
    process = kerasboost(
        "run",
        "recipes/bert_pretrain.yaml",
        "--output-dir",
        str(pretrain),
        *overrides("train.steps=6", "train.eval_every=3", "train.learning_rate=5e-3", "model.config.dropout=0"),
        backend=backend,
    )
    assert process.returncode == 0, explain(process)
    data = write_topics_csv(root / "topics.csv")
    classify = root / "classify"
    process = kerasboost(
        "run",
        "recipes/classify.yaml",
        "--output-dir",
        str(classify),
        *overrides(
            f"data.source={data}",
            f"model.preset={pretrain}",
            "train.steps=100",
            "train.eval_every=50",
            "train.learning_rate=5e-3",
            "train.warmup_steps=4",
            "data.validation_split=0.25",
        ),
        backend=backend,
    )
    assert process.returncode == 0, explain(process)
    return backend, pretrain, classify, data


def test_bert_pretraining_learns_mlm_and_nsp(runs):
    _, pretrain, _, _ = runs
    history = metrics(pretrain)
    assert [entry["step"] for entry in history] == [0, 3, 6]
    assert history[-1]["val_mlm_loss"] < history[0]["val_mlm_loss"] - 0.05, history
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    for key in ("val_nsp_loss", "val_nsp_accuracy", "val_mlm_accuracy", "val_perplexity"):
        assert key in history[-1]
    assert (pretrain / "preset" / "config.json").is_file()


def test_classification_from_the_pretraining_run_beats_the_majority_class(runs):
    _, _, classify, _ = runs
    history = metrics(classify)
    final = history[-1]
    assert json.loads((classify / "labels.json").read_text()) == sorted(TOPIC_WORDS)
    assert final["val_accuracy"] >= 1 / 3 + 0.3, history  # three balanced classes: majority is ~1/3
    assert final["val_macro_f1"] > 0.5 and 0 < final["val_precision"] <= 1 and 0 < final["val_recall"] <= 1
    assert final["val_loss"] < history[0]["val_loss"]
    events = EventAccumulator(str(classify / "logs" / "validation"), size_guidance={"tensors": 0})
    events.Reload()
    assert "confusion_matrix" in events.Tags()["tensors"]
    assert {"macro_f1", "precision", "recall", "accuracy"} <= set(events.Tags()["tensors"])


def test_fine_tuning_starts_from_the_exported_backbone(runs):
    backend, pretrain, _, data = runs
    process = python(
        Path(__file__).with_name("check_transfer.py").read_text(),
        backend,
        str(pretrain),
        "recipes/classify.yaml",
        str(data),
    )
    assert process.returncode == 0 and "TRANSFER OK" in process.stdout, explain(process)


def test_eval_prints_the_documented_metrics(runs):
    backend, _, classify, _ = runs
    process = kerasboost("eval", str(classify / "recipe.yaml"), "--from", str(classify), "--json", backend=backend)
    assert process.returncode == 0, explain(process)
    values = json.loads(process.stdout.strip().splitlines()[-1])
    assert set(values) == {"loss", "accuracy", "precision", "recall", "macro_f1"}
    final = metrics(classify)[-1]
    assert values["accuracy"] == pytest.approx(final["val_accuracy"], abs=1e-6)
    # The run directory alone: its recipe.yaml and newest checkpoint.
    table = kerasboost("eval", str(classify), backend=backend)
    assert table.returncode == 0 and all(f"\n{name} " in "\n" + table.stdout for name in values), table.stdout
    assert f"accuracy {values['accuracy']:.4f}" in " ".join(table.stdout.split()), table.stdout


def test_eval_on_another_file(runs):
    backend, _, classify, data = runs
    process = kerasboost(
        "eval", str(classify / "recipe.yaml"), "--from", str(classify), "--data", str(data), "--json", backend=backend
    )
    assert process.returncode == 0, explain(process)
    values = json.loads(process.stdout.strip().splitlines()[-1])
    assert values["accuracy"] > 0.5, values  # the whole labelled file, mostly seen in training
    missing = kerasboost(
        "eval", str(classify / "recipe.yaml"), "--from", str(classify), "--data", str(data) + ".nope", backend=backend
    )
    assert missing.returncode == 2 and "--data: file not found" in missing.stderr


def test_eval_with_a_wrong_label_column_is_a_one_line_error(runs):
    backend, _, classify, data = runs
    process = kerasboost(
        "eval",
        str(classify / "recipe.yaml"),
        "--from",
        str(classify),
        "--set",
        "data.label_field=topic",
        backend=backend,
    )
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        f"error: {data}: no column 'topic' (data.label_field); found: text, label"
    ]


def test_predict_labels_texts_as_eval_scores_them(runs, tmp_path):
    """predict encodes texts as training did: its labels on a file give eval's accuracy on that file."""
    backend, _, classify, data = runs
    out = tmp_path / "labels.jsonl"
    process = kerasboost(
        "predict", str(classify), "--input", str(data), "--output", str(out), "--batch-size", "7", backend=backend
    )
    assert process.returncode == 0, explain(process)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    truth = [line.rsplit(",", 1)[1] for line in data.read_text().splitlines()[1:]]
    assert len(rows) == len(truth) and all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)
    assert all(r["label"] == max(r["probabilities"], key=r["probabilities"].get) for r in rows)
    evaluated = kerasboost("eval", str(classify), "--data", str(data), "--json", backend=backend)
    accuracy = json.loads(evaluated.stdout.strip().splitlines()[-1])["accuracy"]
    assert sum(r["label"] == t for r, t in zip(rows, truth)) / len(rows) == pytest.approx(accuracy, abs=1e-6)

    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    refused = kerasboost("predict", str(classify), "--input", str(empty), "--output", str(tmp_path / "x.jsonl"))
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"error: --input: no documents found in {empty}"
    ]
    assert not (tmp_path / "x.jsonl").exists()


TRANSFORMERS_PROBABILITIES = """
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
texts = json.loads(sys.argv[2])
with torch.no_grad():
    logits = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
print(json.dumps({"labels": [model.config.id2label[i] for i in range(logits.shape[1])],
                  "probabilities": torch.softmax(logits, -1).tolist()}))
"""


def test_export_to_transformers_predicts_as_kerasboost_does(runs, tmp_path):
    backend, _, classify, _ = runs
    out = tmp_path / "hf"
    exported = kerasboost("export", str(classify), "--format", "transformers", "--out", str(out), backend=backend)
    assert exported.returncode == 0, explain(exported)
    texts = ["socket server port connection of the", "read the file path and name", "round the float value"]
    ours = kerasboost("predict", str(classify), *[a for t in texts for a in ("--text", t)], backend=backend)
    assert ours.returncode == 0, explain(ours)
    rows = [json.loads(line) for line in ours.stdout.strip().splitlines()]
    hf = python(TRANSFORMERS_PROBABILITIES, backend, str(out), json.dumps(texts))
    assert hf.returncode == 0, explain(hf)
    theirs = json.loads(hf.stdout.strip().splitlines()[-1])
    assert theirs["labels"] == sorted(TOPIC_WORDS)
    for row, probabilities in zip(rows, theirs["probabilities"]):
        assert [row["probabilities"][name] for name in theirs["labels"]] == pytest.approx(probabilities, abs=1e-4)


SAVED_MODEL_LOGITS = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])  # held: its variables live as long as the loaded object
inputs = {key: tf.constant(np.array(value, dtype="int32")) for key, value in json.loads(sys.argv[2]).items()}
print(json.dumps(tf.nn.softmax(model.serve(inputs), -1).numpy().tolist()))
"""


def test_saved_model_serves_the_classifier_and_other_backends_say_which_exports(runs, tmp_path):
    backend, _, classify, _ = runs
    out = tmp_path / "saved"
    exported = kerasboost("export", str(classify), "--format", "saved_model", "--out", str(out), backend=backend)
    if backend != "tensorflow":
        assert exported.returncode == 2 and exported.stderr.strip().splitlines() == [
            f"error: --format saved_model: Keras exports SavedModels of these models from the tensorflow backend, "
            f"not {backend}; add --backend tensorflow (the run's checkpoints load on any backend)"
        ]
        return
    assert exported.returncode == 0, explain(exported)
    text = "socket server port connection of the"
    ours = json.loads(kerasboost("predict", str(classify), "--text", text, backend=backend).stdout.splitlines()[-1])
    encoded = python(ENCODE, backend, str(classify), text)
    assert encoded.returncode == 0, explain(encoded)
    served = python(SAVED_MODEL_LOGITS, backend, str(out), encoded.stdout.strip().splitlines()[-1])
    assert served.returncode == 0, explain(served)
    names = json.loads((classify / "labels.json").read_text())
    probabilities = json.loads(served.stdout.strip().splitlines()[-1])[0]
    assert probabilities == pytest.approx([ours["probabilities"][name] for name in names], abs=1e-5)


def test_the_run_directory_alone_predicts_and_exports(runs, tmp_path):
    """Handed on without its corpus (the recipe's data.source gone), a run still predicts, the same as
    before, and exports; eval, which needs the data, says which file is missing."""
    backend, _, classify, _ = runs
    moved = tmp_path / "moved"
    shutil.copytree(classify, moved, ignore=shutil.ignore_patterns(".lock"))
    recipe = yaml.safe_load((moved / "recipe.yaml").read_text())
    recipe["data"]["source"] = str(tmp_path / "gone.csv")
    (moved / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    texts = ["--text", "socket server port connection of the", "--text", "round the float value"]
    before = kerasboost("predict", str(classify), *texts, backend=backend)
    after = kerasboost("predict", str(moved), *texts, backend=backend)
    assert after.returncode == 0, explain(after)
    assert after.stdout == before.stdout
    exported = kerasboost(
        "export", str(moved), "--format", "transformers", "--out", str(tmp_path / "hf"), backend=backend
    )
    assert exported.returncode == 0, explain(exported)
    evaluated = kerasboost("eval", str(moved), backend=backend)
    assert evaluated.returncode == 2 and "gone.csv" in evaluated.stderr, explain(evaluated)


ONNX_PROBABILITIES = """
import json, sys
import numpy as np
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1] + "/model.onnx")
inputs = json.loads(sys.argv[2])
logits = session.run(None, {i.name: np.array(inputs[i.name], dtype="int32") for i in session.get_inputs()})[0]
exp = np.exp(logits - logits.max(-1, keepdims=True))
print(json.dumps((exp / exp.sum(-1, keepdims=True)).tolist()))
"""


def test_onnx_runs_the_classifier_in_onnx_runtime(runs, tmp_path):
    """Exported from the tensorflow backend (a run trained on any backend), run by ONNX Runtime: the
    probabilities `kerasboost predict` gives on the run's own backend."""
    backend, _, classify, _ = runs
    out = tmp_path / "onnx"
    exported = kerasboost("export", str(classify), "--format", "onnx", "--out", str(out), backend=backend)
    if backend != "tensorflow":
        assert exported.returncode == 2 and exported.stderr.strip().splitlines() == [
            f"error: --format onnx: Keras exports ONNX files (through tf2onnx) of these models from the tensorflow "
            f"backend, not {backend}; add --backend tensorflow (the run's checkpoints load on any backend)"
        ]
        assert not out.exists()
        exported = kerasboost("export", str(classify), "--format", "onnx", "--out", str(out), "--backend", "tensorflow")
    assert exported.returncode == 0, explain(exported)
    text = "socket server port connection of the"
    ours = json.loads(kerasboost("predict", str(classify), "--text", text, backend=backend).stdout.splitlines()[-1])
    encoded = python(ENCODE, "tensorflow", str(classify), text)
    assert encoded.returncode == 0, explain(encoded)
    served = python(ONNX_PROBABILITIES, backend, str(out), encoded.stdout.strip().splitlines()[-1])
    assert served.returncode == 0, explain(served)
    names = json.loads((classify / "labels.json").read_text())
    probabilities = json.loads(served.stdout.strip().splitlines()[-1])[0]
    assert probabilities == pytest.approx([ours["probabilities"][name] for name in names], abs=1e-5)


ENCODE = """
import json, sys
from kerasboost.backend import select_backend
select_backend("tensorflow")
from kerasboost.predict import model_inputs
from kerasboost.runner import load_trained
x = model_inputs(load_trained(sys.argv[1]), [sys.argv[2]])
print(json.dumps({key: value.tolist() for key, value in x.items()}))
"""


def test_predict_fills_masks_from_a_pretraining_run(runs):
    backend, pretrain, _, _ = runs
    process = kerasboost(
        "predict",
        str(pretrain),
        "--text",
        "the [MASK] of the file",
        "--text",
        "[MASK] value",
        "--top-k",
        "3",
        backend=backend,
    )
    assert process.returncode == 0, explain(process)
    rows = [json.loads(line) for line in process.stdout.strip().splitlines()]
    assert [len(r["fills"]) for r in rows] == [1, 1] and all(len(r["fills"][0]) == 3 for r in rows)
    probabilities = [fill["probability"] for fill in rows[0]["fills"][0]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    assert "[MASK]" not in rows[0]["filled"] and rows[0]["fills"][0][0]["token"] in rows[0]["filled"]
    # Counted over the whole input, not within the batch.
    unmasked = kerasboost(
        "predict", str(pretrain), "--text", "a [MASK]", "--text", "no mask here", "--batch-size", "1", backend=backend
    )
    assert unmasked.returncode == 2 and "text 2 has no [MASK] to fill" in unmasked.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_causal_lm_learns_and_generates_the_requested_length(backend, tmp_path):
    """Also the defaults' speed settings: precision auto, and (TensorFlow, JAX) 3 steps per compiled call."""
    run = tmp_path / "clm"
    process = kerasboost(
        "run",
        "recipes/gpt2_clm.yaml",
        "--output-dir",
        str(run),
        *overrides(
            "train.steps=6",
            "train.eval_every=3",
            "logging.every_steps=3",
            "train.precision=auto",
            "train.steps_per_execution=auto",
            "train.learning_rate=5e-3",
            "model.config.dropout=0",
            "generate.max_length=12",
        ),
        backend=backend,
    )
    assert process.returncode == 0, explain(process)
    assert "precision " in process.stdout and "(auto: " in process.stdout
    recorded = yaml.safe_load((run / "recipe.yaml").read_text())["train"]["precision"]
    assert recorded in ("float32", "mixed_bfloat16") and f"precision {recorded} (auto: " in process.stdout
    assert ("3 micro-batches per compiled call" in process.stdout) == (backend != "torch")
    assert [entry["step"] for entry in metrics(run)] == [0, 3, 6]
    history = metrics(run)
    assert history[-1]["val_loss"] < history[0]["val_loss"] - 0.05, history
    assert history[-1]["val_perplexity"] < history[0]["val_perplexity"]
    generations = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
    assert {g["strategy"] for g in generations} == {"greedy", "top_k", "top_p"}
    assert len(generations) == 6 and all(g["tokens"] == 12 and g["text"].startswith(g["prompt"]) for g in generations)
    assert "[greedy]" in process.stdout
    # The same continuation from the trained run, later: generate (predict's alias for causal LMs).
    greedy = next(g for g in generations if g["strategy"] == "greedy")
    again = kerasboost("generate", str(run), "--prompt", greedy["prompt"], "--max-length", "12", backend=backend)
    assert again.returncode == 0, explain(again)
    assert json.loads(again.stdout.strip().splitlines()[-1])["text"] == greedy["text"]
    assert (run / "vocabulary.json").is_file() and (run / "merges.txt").is_file()
