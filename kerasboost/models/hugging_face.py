"""Hugging Face checkpoints in and out: a local `save_pretrained` directory (config.json + *.safetensors)
loaded into a keras-hub backbone and kerasboost's task heads, with every tensor the task can use; and a
trained model written back as the transformers class of its task (`export --format transformers`).

Ours rather than keras-hub's converters (`Backbone.from_preset(hf_dir)`), which load the backbone alone
(a BertForPreTraining's masked-LM and next-sentence heads, a classifier's weights all start random) and
stop on common checkpoints: BertForMaskedLM is saved without a pooler, GPT-2's `n_inner` is taken to be
4 x `n_embd`, RoBERTa's token-type row is dropped. What is specific to an architecture (config keys,
tensor names, layouts) is its `HuggingFaceCheckpoint` in architectures/; this module reads the files,
applies those transforms, checks shapes, and says what was loaded and what starts fresh.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from kerasboost.architectures import Architecture, architecture_of
from kerasboost.architectures.spec import HuggingFaceCheckpoint, Weight, linear
from kerasboost.errors import InputError
from kerasboost.models.block_settings import (
    feed_forward_activation,
    gelu,
    layer_norm_epsilon,
    use_feed_forward_activation,
    use_layer_norm_epsilon,
)


def is_hugging_face_checkpoint(directory: Path) -> bool:
    """A transformers `save_pretrained` directory (its config.json names a `model_type`), not a keras-hub
    preset (which has a metadata.json)."""
    config = directory / "config.json"
    if not config.is_file() or (directory / "metadata.json").is_file():
        return False
    try:
        return "model_type" in json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


@dataclass
class Checkpoint:
    """A checkpoint directory opened for one architecture: its config and a name -> file index of its tensors."""

    directory: Path
    config: dict
    spec: HuggingFaceCheckpoint
    files: dict[str, Path]
    prefix: str  # "bert." in BertForMaskedLM's names, "" in BertModel's

    def __contains__(self, key: str) -> bool:
        return key in self.files

    def tensor(self, key: str) -> np.ndarray:
        with safe_open(str(self.files[key]), framework="np") as tensors:
            return tensors.get_tensor(key)

    @property
    def class_name(self) -> str:
        return ", ".join(self.config.get("architectures") or [self.config["model_type"]])


def open_checkpoint(directory: Path, architecture: Architecture) -> Checkpoint:
    """`directory` read as a checkpoint of `architecture`, or a one-line error naming what does not fit."""
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    spec = architecture.checkpoint
    model_type = config.get("model_type")
    if spec is None or model_type not in spec.model_types:
        raise InputError(
            f"model.preset: {directory} holds a {model_type!r} checkpoint, not {architecture.title}; "
            "set model.backbone to its architecture (bert, gpt2, roberta)"
        )
    activation = config.get(spec.activation_key, "gelu")
    if activation not in spec.activations:
        raise InputError(
            f"model.preset: {directory / 'config.json'}: {spec.activation_key} {activation!r} is not supported "
            f"by keras-hub's {architecture.backbone_class} (supported: {', '.join(spec.activations)})"
        )
    files = {}
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), framework="np") as tensors:
            files.update(dict.fromkeys(tensors.keys(), file))  # noqa: SIM118  (a safetensors handle is not a dict)
    if not files:
        raise InputError(
            f"model.preset: {directory} holds no *.safetensors weights (save with transformers' save_pretrained)"
        )
    first = spec.backbone_weights(config)[0].keys[0]
    base = architecture.hugging_face.base_model
    prefix = f"{base}." if f"{base}.{first}" in files else ""
    if prefix + first not in files:
        raise InputError(f"model.preset: {directory}: no tensor {first} (or {base}.{first}) in the checkpoint")
    return Checkpoint(directory, config, spec, files, prefix)


def backbone_from_checkpoint(checkpoint: Checkpoint, backbone_class, vocabulary_size: int):
    """The keras-hub backbone `checkpoint.config` describes, under the current dtype policy, with its
    weights (optional ones it lacks start fresh; `load_task_weights` reports them)."""
    arguments = checkpoint.spec.backbone_config(checkpoint.config)
    if arguments["vocabulary_size"] != vocabulary_size:
        raise InputError(
            f"model.preset: the checkpoint's vocabulary has {arguments['vocabulary_size']} tokens "
            f"but the tokenizer has {vocabulary_size}"
        )
    backbone = backbone_class(**arguments, dtype=keras.config.dtype_policy())
    approximate = checkpoint.spec.activations[checkpoint.config.get(checkpoint.spec.activation_key, "gelu")]
    use_feed_forward_activation(backbone, gelu(approximate))
    _use_epsilon(backbone, checkpoint)
    weights = checkpoint.spec.backbone_weights(checkpoint.config)
    _assign(backbone, [w for w in weights if checkpoint.prefix + w.keys[0] in checkpoint or not w.optional], checkpoint)
    return backbone


def load_task_weights(model: keras.Model, checkpoint: Checkpoint) -> list[str]:
    """Loads every head of `checkpoint` that `model` has; one line saying what was loaded and what starts
    fresh (a head the checkpoint lacks, or whose shape differs, e.g. another number of labels)."""
    _use_epsilon(model, checkpoint)
    variables = {variable.path: variable for variable in model.weights}
    loaded, fresh = ["backbone"], []
    missing = [
        w
        for w in checkpoint.spec.backbone_weights(checkpoint.config)
        if checkpoint.prefix + w.keys[0] not in checkpoint
    ]
    for layer in sorted({weight.path.split("/")[0] for weight in missing}):
        fresh.append(f"{layer} (not in the checkpoint)")
    for head, weights_of in checkpoint.spec.heads.items():
        weights = weights_of(checkpoint.config)
        if not all(weight.path in variables for weight in weights):
            continue  # not a head of this task
        if not all(key in checkpoint for weight in weights for key in weight.keys):
            fresh.append(f"{head} (not in the checkpoint)")
            continue
        mismatch = _first_mismatch(variables, weights, checkpoint)
        if mismatch:
            fresh.append(f"{head} ({mismatch})")
            continue
        _assign(model, weights, checkpoint, prefixed=False)
        loaded.append(head)
    line = f"checkpoint: {checkpoint.directory} ({checkpoint.class_name}) · loaded {', '.join(loaded)}"
    return [line + (f" · starts fresh: {', '.join(fresh)}" if fresh else "")]


def _assign(model, weights: list[Weight], checkpoint: Checkpoint, prefixed: bool = True) -> None:
    variables = {variable.path: variable for variable in model.weights}
    prefix = checkpoint.prefix if prefixed else ""
    for weight in weights:
        keys = [prefix + key for key in weight.keys]
        absent = [key for key in keys if key not in checkpoint]
        if absent:
            raise InputError(f"model.preset: {checkpoint.directory}: the checkpoint has no tensor {absent[0]}")
        variable = variables[weight.path]
        value = _value(weight, keys, checkpoint, tuple(variable.shape))
        variable.assign(keras.ops.cast(value, variable.dtype))


def _value(weight: Weight, keys: list[str], checkpoint: Checkpoint, shape: tuple) -> np.ndarray:
    tensors = [checkpoint.tensor(key).astype("float32") for key in keys]
    try:
        value = weight.transform(*tensors, shape=shape)
    except ValueError:
        value = None
    if value is None or value.shape != shape:
        raise InputError(
            f"model.preset: {checkpoint.directory}: {keys[0]} {tensors[0].shape} does not fit {weight.path} {shape}"
        )
    return value


def _first_mismatch(variables: dict, weights: list[Weight], checkpoint: Checkpoint) -> str | None:
    """Why a head's tensors do not fit the task's head (its label count, say), or None."""
    for weight in weights:
        shape = tuple(variables[weight.path].shape)
        try:
            _value(weight, list(weight.keys), checkpoint, shape)
        except InputError:
            tensor = tuple(checkpoint.tensor(weight.keys[0]).shape)
            return f"the checkpoint's {weight.keys[0]} is {tensor}, this task's {weight.path} {shape}"
    return None


def _use_epsilon(model, checkpoint: Checkpoint) -> None:
    """Every layer norm with the checkpoint's epsilon (keras-hub fixes one per backbone, 1e-5 in its
    masked-LM head; Hugging Face configs carry theirs)."""
    epsilon = checkpoint.config.get(checkpoint.spec.epsilon_key)
    if epsilon is not None:
        use_layer_norm_epsilon(model, epsilon)


def save_pretrained(
    model: keras.Model, backbone, tokenizer, task: str, labels: list[str] | None, directory: Path
) -> Path:
    """Writes `model` as transformers' class for `task` (config.json with `architectures`, id2label for
    a classifier; model.safetensors) and its tokenizer as transformers reads it, so that
    `AutoModelFor<Task>.from_pretrained(directory)` and `AutoTokenizer.from_pretrained(directory)` load
    them. `backbone` holds the backbone's values (a merged copy for an adapter run)."""
    spec = architecture_of(backbone)
    checkpoint = spec.checkpoint
    if checkpoint is None or task not in checkpoint.task_classes:
        raise InputError(f"--format transformers: transformers has no {spec.title} class for task {task}")
    config = _hugging_face_config(backbone, tokenizer, task, labels)
    values = {variable.path: _numpy(variable) for variable in model.weights}
    values.update({variable.path: _numpy(variable) for variable in backbone.weights})
    tensors: dict[str, list] = {}
    base = spec.hugging_face.base_model + "."
    weights = [(base, weight) for weight in checkpoint.backbone_weights(config)]
    for head in checkpoint.heads.values():
        owned = head(config)
        if all(weight.path in values for weight in owned):
            weights += [("", weight) for weight in owned]
    for prefix, weight in weights:
        if weight.path not in values:  # an optional variable this model does not have
            continue
        if weight.to_hugging_face is not None:
            for key, tensor in weight.to_hugging_face(values[weight.path]).items():
                tensors[prefix + key] = [(0, tensor)]
            continue
        tensors.setdefault(prefix + weight.keys[0], []).append(
            (weight.part or 0, _exported(weight, values[weight.path]))
        )
    joined = {
        key: np.concatenate([t for _, t in sorted(parts, key=lambda p: p[0])], axis=-1)
        for key, parts in tensors.items()
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {key: np.ascontiguousarray(t, dtype=np.float32) for key, t in joined.items()},
        str(directory / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (directory / "config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    _save_tokenizer(tokenizer, checkpoint, directory)
    return directory


def _hugging_face_config(backbone, tokenizer, task: str, labels: list[str] | None) -> dict:
    spec = architecture_of(backbone)
    checkpoint = spec.checkpoint
    config = {
        "model_type": checkpoint.model_types[0],
        "architectures": [checkpoint.task_classes[task]],
        **checkpoint.export_config(backbone.get_config()),
    }
    config[checkpoint.epsilon_key] = layer_norm_epsilon(backbone)
    approximate = feed_forward_activation(backbone) is not keras.activations.gelu
    config[checkpoint.activation_key] = next(
        name for name, tanh in checkpoint.activations.items() if tanh == approximate
    )
    for name in ("bos_token", "eos_token", "pad_token"):
        if name in checkpoint.special_tokens:
            config[f"{name}_id"] = int(getattr(tokenizer, checkpoint.special_tokens[name]))
    config["tie_word_embeddings"] = True
    if labels is not None:
        config["id2label"] = {str(index): label for index, label in enumerate(labels)}
        config["label2id"] = {label: index for index, label in enumerate(labels)}
        config["num_labels"] = len(labels)
    return config


def _exported(weight: Weight, value: np.ndarray) -> np.ndarray:
    """The inverse of `weight.transform`: kernels back to (in, out) (torch's (out, in) for a Linear)."""
    if weight.path.endswith("/kernel") and value.ndim > 2:
        value = value.reshape(int(np.prod(value.shape[: weight.input_dims])), -1)
    elif weight.path.endswith("/bias"):
        value = value.reshape(-1)
    return value.T if weight.transform is linear else value


def _save_tokenizer(tokenizer, checkpoint: HuggingFaceCheckpoint, directory: Path) -> None:
    """The vocabulary files transformers' slow tokenizers read (vocab.txt, or vocab.json + merges.txt) and
    tokenizer_config.json naming the class and its special tokens; transformers builds the fast one."""
    settings = {"tokenizer_class": checkpoint.tokenizer_class}
    for name, attribute in checkpoint.special_tokens.items():
        settings[name] = tokenizer.id_to_token(int(getattr(tokenizer, attribute)))
    merges = getattr(tokenizer, "merges", None)
    if merges is None:
        (directory / "vocab.txt").write_text("".join(t + "\n" for t in tokenizer.get_vocabulary()), encoding="utf-8")
        settings["do_lower_case"] = bool(getattr(tokenizer, "lowercase", False))
    else:
        (directory / "vocab.json").write_text(json.dumps(tokenizer.vocabulary, ensure_ascii=False), encoding="utf-8")
        (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
        settings["add_prefix_space"] = False
    (directory / "tokenizer_config.json").write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")


def _numpy(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(variable, "float32")))
