"""Hugging Face PEFT adapters: export ours as `adapter_config.json` + `adapter_model.safetensors`, import theirs.

Exported keys name the Hugging Face modules the architecture gives (architectures/): for BERT those of
`BertModel` (encoder.layer.N...), for GPT-2 those of `GPT2LMHeadModel` (transformer.h.N...), the classes
one serves an encoder and an LM with; `target_modules` also matches them under any prefix
(BertForSequenceClassification's bert., ...). Import accepts keys with or without the base model's
prefix. PEFT stores lora_A (r, in) and lora_B (out, r): the transposes of ours.

Where an architecture fuses projections (GPT-2 query, key and value into one `c_attn` (a Conv1D with
3 * hidden outputs), our separate q/k/v adapters of rank r become one c_attn adapter of rank n * r
(n = how many of q/k/v are adapted):
lora_A stacks the n A matrices, lora_B is block-diagonal, and alpha is scaled (n * alpha, or
sqrt(n) * alpha with rsLoRA) so that alpha / rank is unchanged; PEFT's `rank_pattern` / `alpha_pattern`
carry the per-module values. The reverse is exact too: each of q/k/v gets the shared lora_A and its own
third of lora_B. For DoRA the magnitude vector is split or joined the same way (an un-adapted third
keeps the base column norms, i.e. a scale of 1).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import keras
import numpy as np
from safetensors.numpy import load_file, save_file

from kerasboost.architectures import architecture_of
from kerasboost.architectures.spec import Weight, linear
from kerasboost.errors import InputError
from kerasboost.peft.inject import PeftReport, adapter_layers, freeze_all_but, projections, quantize_projections
from kerasboost.peft.lora import attach_lora
from kerasboost.recipe import PeftConfig

PREFIX = "base_model.model."


def _numpy(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


def _block(path: str) -> int:
    return int(re.search(r"transformer_layer_(\d+)", path).group(1))


def _module(backbone, block: int, name: str) -> str:
    """The HF module name, without the model-class prefix."""
    return architecture_of(backbone).hugging_face.module(block, name)


def _fused(backbone) -> tuple[str, ...]:
    return architecture_of(backbone).hugging_face.fused


def _key_prefix(backbone, classifier: bool) -> str:
    """Where the adapted modules sit in the class exported for: the base model's attribute in
    *ForSequenceClassification (`bert.`, `roberta.`, `transformer.`), else `export_prefix`."""
    names = architecture_of(backbone).hugging_face
    return PREFIX + (f"{names.base_model}." if classifier else names.export_prefix)


def _classifier_weights(backbone) -> list[Weight]:
    """The classifier's weights as the architecture's *ForSequenceClassification names them (BERT's
    `classifier`, RoBERTa's `classifier.dense` and `classifier.out_proj`, GPT-2's `score`)."""
    spec = architecture_of(backbone)
    return spec.checkpoint.heads["classifier"]({})


def _saved_heads(backbone, modules_to_save: list[str]) -> list[list[Weight]]:
    """The weights of `modules_to_save` as PEFT saves them: the classifier is the one layer PEFT's
    sequence-classification classes have a counterpart of."""
    for name in modules_to_save:
        if name != "classifier":
            raise InputError(
                f"peft.modules_to_save: {name!r} has no counterpart in Hugging Face's "
                f"{architecture_of(backbone).title} classes (export --format adapter keeps it)"
            )
    return [_classifier_weights(backbone)] if modules_to_save else []


def _to_hugging_face(weight: Weight, value: np.ndarray) -> np.ndarray:
    """A head's variable as Hugging Face stores it: the inverse of `weight.transform` (a 2-D kernel is
    transposed back into torch's (out, in))."""
    return value.T if weight.transform is linear else value


def export_peft(model: keras.Model, backbone, directory: Path, modules_to_save: list[str] = ()) -> Path:
    """Writes the model's adapter in Hugging Face PEFT's format (for `PeftModel.from_pretrained`), with the
    fully trained `modules_to_save` (PEFT's key of the same name, their tensors beside the adapters). A
    classifier's adapters are named as in the architecture's *ForSequenceClassification."""
    layers = adapter_layers(model)
    if not layers:
        raise InputError("this model has no adapter to export (the recipe has no peft: section)")
    first = layers[0]
    rank, alpha, rslora, dora = (
        first.adapter_rank,
        first.adapter_alpha,
        first.adapter_rslora,
        first.adapter_method == "dora",
    )
    names = {path: name for path, (layer, name) in projections(model).items()}
    saved = _saved_heads(backbone, list(modules_to_save))
    classifier = any(variable.path.startswith("classifier/") for variable in model.weights)
    prefix = _key_prefix(backbone, classifier)
    tensors, rank_pattern, alpha_pattern, modules = {}, {}, {}, set()
    fused: dict[int, dict[str, object]] = {}
    for layer in layers:
        name = names[layer.path]
        if name in _fused(backbone):
            fused.setdefault(_block(layer.path), {})[name] = layer
            continue
        module = _module(backbone, _block(layer.path), name)
        modules.add(module)
        key = prefix + module
        tensors[f"{key}.lora_A.weight"] = _numpy(layer.adapter_a).T
        tensors[f"{key}.lora_B.weight"] = _numpy(layer.adapter_b).T
        if dora:
            tensors[f"{key}.lora_magnitude_vector"] = _numpy(layer.adapter_magnitude)
    for block, parts in fused.items():
        module = _module(backbone, block, _fused(backbone)[0])
        modules.add(module)
        any_layer = next(iter(parts.values()))
        hidden = any_layer.adapter_shape[1]
        present = [name for name in _fused(backbone) if name in parts]
        lora_a = np.concatenate([_numpy(parts[name].adapter_a).T for name in present])
        lora_b = np.zeros((len(_fused(backbone)) * hidden, rank * len(present)), np.float32)
        magnitude = []
        for slot, name in enumerate(_fused(backbone)):
            if name in parts:
                column = present.index(name) * rank
                lora_b[slot * hidden : (slot + 1) * hidden, column : column + rank] = _numpy(parts[name].adapter_b).T
                if dora:
                    magnitude.append(_numpy(parts[name].adapter_magnitude))
            elif dora:
                base = _sibling(backbone, block, name)
                magnitude.append(np.sqrt(np.sum(np.square(_numpy(base._kernel).reshape(hidden, hidden)), axis=0)))
        key = prefix + module
        tensors[f"{key}.lora_A.weight"] = lora_a
        tensors[f"{key}.lora_B.weight"] = lora_b
        if dora:
            tensors[f"{key}.lora_magnitude_vector"] = np.concatenate(magnitude)
        rank_pattern[module] = rank * len(present)
        alpha_pattern[module] = alpha * (math.sqrt(len(present)) if rslora else len(present))
    variables = {variable.path: variable for variable in model.weights}
    for weights in saved:
        for weight in weights:
            tensors[PREFIX + weight.keys[0]] = _to_hugging_face(weight, _numpy(variables[weight.path]))
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors writes an array's raw buffer: make every one C-ordered (np.concatenate of transposes is not).
    save_file(
        {key: np.ascontiguousarray(value) for key, value in tensors.items()},
        str(directory / "adapter_model.safetensors"),
        metadata={"format": "pt"},
    )
    config = {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS" if classifier else None,
        "base_model_name_or_path": None,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": float(first.adapter_dropout.rate) if first.adapter_dropout is not None else 0.0,
        "use_rslora": rslora,
        "use_dora": dora,
        "target_modules": r"^(?:.*\.)?(?:" + "|".join(re.escape(module) for module in sorted(modules)) + ")$",
        "rank_pattern": {re.escape(k): v for k, v in rank_pattern.items()},
        "alpha_pattern": {re.escape(k): v for k, v in alpha_pattern.items()},
        "fan_in_fan_out": architecture_of(backbone).hugging_face.fan_in_fan_out,
        "bias": "none",
        "modules_to_save": sorted({weight.keys[0].split(".")[0] for weights in saved for weight in weights}) or None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=1) + "\n")
    return directory


def _sibling(backbone, block: int, name: str):
    for path, (layer, found) in projections(backbone).items():
        if found == name and _block(path) == block:
            return layer
    raise KeyError(name)


def is_peft_adapter(directory: Path) -> bool:
    config = directory / "adapter_config.json"
    return config.is_file() and "peft_type" in json.loads(config.read_text())


def import_peft(model: keras.Model, backbone, directory: Path, settings: PeftConfig, seed: int) -> PeftReport:
    """Adds a Hugging Face PEFT LoRA/DoRA adapter to `model` and freezes the rest."""
    config = json.loads((directory / "adapter_config.json").read_text())
    if config.get("peft_type") != "LORA":
        raise InputError(f"peft.adapter: {directory} is a {config.get('peft_type')} adapter; only LORA is supported")
    tensors = {
        key.removesuffix(".weight"): value
        for key, value in load_file(str(directory / "adapter_model.safetensors")).items()
    }
    method = "dora" if config.get("use_dora") else "lora"
    rslora = bool(config.get("use_rslora"))

    def pattern(patterns: dict, module: str, default: float) -> float:
        """PEFT's rule: a pattern applies to a module whose name ends with it (after a dot)."""
        for key, value in (patterns or {}).items():
            if re.fullmatch(rf"(.*\.)?(?:{key})", module):
                return value
        return default

    if settings.quantize_base:
        quantize_projections(model)
    by_module = {}
    for path, (layer, name) in projections(backbone).items():
        by_module.setdefault(_module(backbone, _block(path), name), []).append((layer, name))
    chosen = []
    for key in sorted(tensors):
        if not key.endswith(".lora_A"):
            continue
        module = key.removeprefix(PREFIX).removesuffix(".lora_A")
        module = module.removeprefix(architecture_of(backbone).hugging_face.base_model + ".")
        if module not in by_module:
            raise InputError(f"peft.adapter: {directory}: module {module!r} is not in this {type(backbone).__name__}")
        lora_a, lora_b = tensors[key], tensors[key.removesuffix("lora_A") + "lora_B"]
        magnitude = tensors.get(key.removesuffix("lora_A") + "lora_magnitude_vector")
        rank = int(pattern(config.get("rank_pattern"), module, config["r"]))
        alpha = float(pattern(config.get("alpha_pattern"), module, config["lora_alpha"]))
        for layer, name in by_module[module]:
            part = _fused(backbone).index(name) if name in _fused(backbone) else None
            attach_lora(layer, method, rank, alpha, settings.dropout, rslora, settings.init, seed)
            fan_in, fan_out = layer.adapter_shape
            rows = slice(part * fan_out, (part + 1) * fan_out) if part is not None else slice(None)
            if lora_a.shape != (rank, fan_in) or lora_b[rows].shape != (fan_out, rank):
                raise InputError(
                    f"peft.adapter: {module} has lora_A {lora_a.shape}, lora_B {lora_b.shape}; "
                    f"this model needs ({rank}, {fan_in}) and ({fan_out}, {rank})"
                )
            layer.adapter_a.assign(lora_a.T)
            layer.adapter_b.assign(lora_b[rows].T)
            if magnitude is not None:
                layer.adapter_magnitude.assign(magnitude[rows])
            chosen.append(layer)
    return freeze_all_but(model, chosen, [*settings.modules_to_save, *_load_saved_heads(model, backbone, tensors)])


def _load_saved_heads(model: keras.Model, backbone, tensors: dict) -> list[str]:
    """Assigns the `modules_to_save` tensors of a PEFT adapter (full keys under base_model.model.) to the
    heads of `model` they belong to; returns those heads' layer names, which stay trainable."""
    variables = {variable.path: variable for variable in model.weights}
    weights = _classifier_weights(backbone)
    keys = [PREFIX + weight.keys[0].removesuffix(".weight") for weight in weights]
    if not any(key in tensors for key in keys):
        return []
    if not all(weight.path in variables for weight in weights) or not all(key in tensors for key in keys):
        raise InputError("peft.adapter: its modules_to_save classifier does not match this task's classifier")
    for weight, key in zip(weights, keys):
        variable = variables[weight.path]
        if tensors[key].size != math.prod(variable.shape):
            shape = tuple(variable.shape)
            raise InputError(
                f"peft.adapter: {key} has shape {tensors[key].shape}; this task's {weight.path} is {shape}"
            )
        variable.assign(weight.transform(tensors[key], shape=tuple(variable.shape)))
    return ["classifier"]
