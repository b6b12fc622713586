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
from kerasboost.peft.adalora import attach_adalora
from kerasboost.peft.inject import PeftReport, adapter_layers, freeze_all_but, projections, quantize_projections
from kerasboost.peft.lora import attach_lora
from kerasboost.recipe import AdaLoraConfig, PeftConfig

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


def export_peft(
    model: keras.Model,
    backbone,
    directory: Path,
    modules_to_save: list[str] = (),
    adalora: AdaLoraConfig | None = None,
    total_steps: int | None = None,
) -> Path:
    """Writes the model's adapter in Hugging Face PEFT's format (for `PeftModel.from_pretrained`), with the
    fully trained `modules_to_save` (PEFT's key of the same name, their tensors beside the adapters). A
    classifier's adapters are named as in the architecture's *ForSequenceClassification. An AdaLoRA
    adapter's config records the schedule it trained with (`adalora`, `total_steps`)."""
    layers = adapter_layers(model)
    if not layers:
        raise InputError("this model has no adapter to export (the recipe has no peft: section)")
    first = layers[0]
    if first.adapter_method == "bottleneck":
        raise InputError(
            "export --format peft: Hugging Face PEFT has no bottleneck adapters; use --format adapter "
            "(the adapters alone) or --format saved_model (the whole model, adapters included)"
        )
    if first.adapter_method == "adalora":
        return _export_adalora(model, backbone, directory, modules_to_save, adalora or AdaLoraConfig(), total_steps)
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
    _write_heads(model, saved, tensors)
    _write_tensors(directory, tensors)
    config = {
        "peft_type": "LORA",
        "r": rank,
        "use_rslora": rslora,
        "use_dora": dora,
        "rank_pattern": {re.escape(k): v for k, v in rank_pattern.items()},
        "alpha_pattern": {re.escape(k): v for k, v in alpha_pattern.items()},
    }
    return _write_config(directory, config, backbone, first, classifier, modules, saved)


def _write_config(directory: Path, config: dict, backbone, first, classifier: bool, modules: set, saved) -> Path:
    """adapter_config.json: `config` (the method's keys) and what every PEFT LoRA-family config holds."""
    config = {
        **config,
        "task_type": "SEQ_CLS" if classifier else None,
        "base_model_name_or_path": None,
        "lora_alpha": first.adapter_alpha,
        "lora_dropout": float(first.adapter_dropout.rate) if first.adapter_dropout is not None else 0.0,
        "target_modules": r"^(?:.*\.)?(?:" + "|".join(re.escape(module) for module in sorted(modules)) + ")$",
        "fan_in_fan_out": architecture_of(backbone).hugging_face.fan_in_fan_out,
        "bias": "none",
        "modules_to_save": sorted({weight.keys[0].split(".")[0] for weights in saved for weight in weights}) or None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=1) + "\n")
    return directory


def _write_heads(model: keras.Model, saved: list[list[Weight]], tensors: dict) -> None:
    variables = {variable.path: variable for variable in model.weights}
    for weights in saved:
        for weight in weights:
            tensors[PREFIX + weight.keys[0]] = _to_hugging_face(weight, _numpy(variables[weight.path]))


def _write_tensors(directory: Path, tensors: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors writes an array's raw buffer: make every one C-ordered (np.concatenate of transposes is not).
    save_file(
        {key: np.ascontiguousarray(value) for key, value in tensors.items()},
        str(directory / "adapter_model.safetensors"),
        metadata={"format": "pt"},
    )


def _unfused_module(backbone, path: str, name: str) -> str:
    """The HF module of an AdaLoRA layer; PEFT's AdaLoRA gives every module one init_r, so a fused module
    (GPT-2's c_attn) cannot hold three of ours."""
    if name in _fused(backbone):
        raise InputError(
            f"AdaLoRA on {architecture_of(backbone).title}'s {name} has no PEFT counterpart "
            f"({'/'.join(_fused(backbone))} share one module there); adapt "
            f"{', '.join(t for t in architecture_of(backbone).targets if t not in _fused(backbone))} instead"
        )
    return _module(backbone, _block(path), name)


def _export_adalora(
    model: keras.Model,
    backbone,
    directory: Path,
    modules_to_save: list[str],
    settings: AdaLoraConfig,
    total_steps: int | None,
) -> Path:
    """PEFT's AdaLoRA format: lora_A (k, in), lora_E (k, 1), lora_B (out, k) holding the k triplets the
    last allocation kept, and `rank_pattern` (module -> the init_r kept flags) to place them."""
    layers = adapter_layers(model)
    names = {path: name for path, (layer, name) in projections(model).items()}
    saved = _saved_heads(backbone, list(modules_to_save))
    classifier = any(variable.path.startswith("classifier/") for variable in model.weights)
    prefix = _key_prefix(backbone, classifier)
    tensors, rank_pattern, modules = {}, {}, set()
    for layer in layers:
        module = _unfused_module(backbone, layer.path, names[layer.path])
        modules.add(module)
        kept = _numpy(layer.rank_mask) > 0
        key = prefix + module
        tensors[f"{key}.lora_A"] = _numpy(layer.adapter_a).T[kept]
        tensors[f"{key}.lora_E"] = _numpy(layer.adapter_e)[kept][:, None]
        tensors[f"{key}.lora_B"] = _numpy(layer.adapter_b).T[:, kept]
        rank_pattern[f"{key.removeprefix(PREFIX)}.lora_E"] = kept.tolist()
    _write_heads(model, saved, tensors)
    _write_tensors(directory, tensors)
    config = {
        "peft_type": "ADALORA",
        "init_r": layers[0].adapter_rank,
        "target_r": settings.target_rank,
        "tinit": settings.tinit,
        "tfinal": settings.tfinal,
        "deltaT": settings.delta_t,
        "beta1": settings.beta1,
        "beta2": settings.beta2,
        "orth_reg_weight": settings.orth_reg_weight,
        "total_step": total_steps or 1,
        "rank_pattern": rank_pattern,
    }
    return _write_config(directory, config, backbone, layers[0], classifier, modules, saved)


def _sibling(backbone, block: int, name: str):
    for path, (layer, found) in projections(backbone).items():
        if found == name and _block(path) == block:
            return layer
    raise KeyError(name)


def is_peft_adapter(directory: Path) -> bool:
    config = directory / "adapter_config.json"
    return config.is_file() and "peft_type" in json.loads(config.read_text())


def import_peft(model: keras.Model, backbone, directory: Path, settings: PeftConfig, seed: int) -> PeftReport:
    """Adds a Hugging Face PEFT LoRA/DoRA or AdaLoRA adapter to `model` and freezes the rest."""
    config = json.loads((directory / "adapter_config.json").read_text())
    if config.get("peft_type") not in ("LORA", "ADALORA"):
        raise InputError(
            f"peft.adapter: {directory} is a {config.get('peft_type')} adapter; LORA and ADALORA are supported"
        )
    tensors = {
        key.removesuffix(".weight"): value
        for key, value in load_file(str(directory / "adapter_model.safetensors")).items()
    }
    if config["peft_type"] == "ADALORA":
        return _import_adalora(model, backbone, directory, config, tensors, settings, seed)
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


def _import_adalora(
    model: keras.Model, backbone, directory: Path, config: dict, tensors: dict, settings: PeftConfig, seed: int
) -> PeftReport:
    """PEFT's AdaLoRA tensors, each module's k kept triplets put back in their places among init_r by its
    `rank_pattern` (the others start at zero and masked), so training can go on allocating."""
    rank = int(config["init_r"])
    patterns = {
        key.removeprefix(f"{architecture_of(backbone).hugging_face.base_model}.").removesuffix(".lora_E"): kept
        for key, kept in (config.get("rank_pattern") or {}).items()
    }
    if settings.quantize_base:
        quantize_projections(model)
    layers = {
        _module(backbone, _block(path), name): (layer, name) for path, (layer, name) in projections(backbone).items()
    }
    chosen = []
    for key in sorted(k for k in tensors if k.endswith(".lora_A")):
        module = key.removeprefix(PREFIX).removesuffix(".lora_A")
        module = module.removeprefix(architecture_of(backbone).hugging_face.base_model + ".")
        if module not in layers:
            raise InputError(f"peft.adapter: {directory}: module {module!r} is not in this {type(backbone).__name__}")
        layer, name = layers[module]
        _unfused_module(backbone, layer.path, name)
        chosen.append((layer, key.removesuffix("lora_A"), patterns.get(module, [True] * rank)))
    schedule = AdaLoraConfig(
        init_rank=rank,
        target_rank=min(int(config.get("target_r", rank)), rank),
        tinit=int(config.get("tinit", 0)),
        tfinal=int(config.get("tfinal", 0)),
        delta_t=int(config.get("deltaT", 1)),
        beta1=float(config.get("beta1", 0.85)),
        beta2=float(config.get("beta2", 0.85)),
        orth_reg_weight=float(config.get("orth_reg_weight", 0.5)),
    )
    attach_adalora([layer for layer, _, _ in chosen], schedule, float(config["lora_alpha"]), settings.dropout, seed)
    for layer, key, kept in chosen:
        kept = np.asarray(kept, bool)
        fan_in, fan_out = layer.adapter_shape
        lora_a, lora_e, lora_b = tensors[key + "lora_A"], tensors[key + "lora_E"], tensors[key + "lora_B"]
        count = int(kept.sum())
        if kept.shape != (rank,) or lora_a.shape != (count, fan_in) or lora_b.shape != (fan_out, count):
            raise InputError(
                f"peft.adapter: {key.removeprefix(PREFIX).rstrip('.')} has lora_A {lora_a.shape}, lora_B "
                f"{lora_b.shape} and {count} of {kept.size} ranks kept; this model needs init_r {rank}, "
                f"lora_A (k, {fan_in}) and lora_B ({fan_out}, k)"
            )
        a, e, b = (
            np.zeros((fan_in, rank), np.float32),
            np.zeros(rank, np.float32),
            np.zeros((rank, fan_out), np.float32),
        )
        a[:, kept], e[kept], b[kept] = lora_a.T, lora_e.reshape(-1), lora_b.T
        layer.adapter_a.assign(a)
        layer.adapter_e.assign(e)
        layer.adapter_b.assign(b)
        layer.rank_mask.assign(kept.astype(np.float32))
    adapted = [layer for layer, _, _ in chosen]
    return freeze_all_but(model, adapted, [*settings.modules_to_save, *_load_saved_heads(model, backbone, tensors)])
