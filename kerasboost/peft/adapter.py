"""Adapter files: only the adapter's weights (safetensors) and a JSON config that names the method,
rank, alpha (bottleneck adapters: their `bottleneck` settings), the wrapped layers with their (in, out)
shapes, and the base model they belong to.

    adapter_config.json          {"format": "kerasboost-adapter", "method", "rank", "alpha", ...}
    adapter_model.safetensors    "<layer path>/lora_a": (in, r), "<layer path>/lora_b": (r, out), ...

Every adapted layer's `adapter_variables` (trained) and `adapter_state` (kept between steps) are saved.

Loading checks every shape against the base model first, so a wrong base is a one-line error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import keras
import numpy as np
from safetensors.numpy import load_file, save_file

from kerasboost.errors import InputError
from kerasboost.peft.inject import adapter_layers, apply_peft
from kerasboost.recipe import BottleneckConfig, PeftConfig

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def base_description(backbone) -> dict:
    config = backbone.get_config()
    return {
        "backbone": type(backbone).__name__,
        **{key: config[key] for key in ("vocabulary_size", "num_layers", "hidden_dim") if key in config},
    }


def save_adapter(model: keras.Model, backbone, directory: Path, modules_to_save: list[str] = ()) -> Path:
    """Writes the adapter of `model` (which must hold adapters), and the fully trained
    `modules_to_save` layers, to `directory`."""
    layers = adapter_layers(model)
    if not layers:
        raise InputError("this model has no adapter to save (the recipe has no peft: section)")
    first = layers[0]
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{layer.path}/{v.name}": np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float32)
        for layer in layers
        for v in _saved_variables(layer)
    }
    for name in modules_to_save:
        tensors.update(
            {v.path: np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float32) for v in model.get_layer(name).weights}
        )
    save_file({key: np.ascontiguousarray(value) for key, value in tensors.items()}, str(directory / WEIGHTS_FILE))
    config = {
        "format": "kerasboost-adapter",
        "version": 1,
        **_method_settings(first),
        "layers": {layer.path: list(layer.adapter_shape) for layer in layers},
        "modules_to_save": list(modules_to_save),
        "base": base_description(backbone),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    return directory


def load_adapter(model: keras.Model, backbone, directory: Path, settings: PeftConfig, seed: int):
    """Adds the adapter stored in `directory` to `model` (method, rank and layers from its config)."""
    config_file = directory / CONFIG_FILE
    if not config_file.is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise InputError(f"peft.adapter: {directory} holds no {CONFIG_FILE} + {WEIGHTS_FILE}")
    config = json.loads(config_file.read_text())
    if config.get("format") != "kerasboost-adapter":
        raise InputError(f"peft.adapter: {config_file} is not a kerasboost adapter")
    base = base_description(backbone)
    for key, value in config["base"].items():
        if base.get(key) != value:
            raise InputError(
                f"peft.adapter: the adapter was trained on a base with {key}={value}, "
                f"this model has {key}={base.get(key)}"
            )
    if config["method"] == "bottleneck":
        update = {"method": "bottleneck", "bottleneck": BottleneckConfig(**config["bottleneck"])}
    else:
        update = {
            "method": config["method"],
            "rank": config["rank"],
            "alpha": config["alpha"],
            "rslora": config["rslora"],
            "targets": [f"re:^{re.escape(path)}$" for path in config["layers"]],
        }
        if config["method"] == "adalora":  # the importance and masks go on with the recipe's schedule
            rank = config["rank"]
            schedule = {"init_rank": rank, "target_rank": min(settings.adalora.target_rank, rank)}
            update["adalora"] = settings.adalora.model_copy(update=schedule)
    adapted = settings.model_copy(
        update={**update, "modules_to_save": sorted({*settings.modules_to_save, *config.get("modules_to_save", [])})}
    )
    report = apply_peft(model, adapted, seed)
    found = {path: (fan_in, fan_out) for path, fan_in, fan_out, _ in report.wrapped}
    stored = {path: tuple(shape) for path, shape in config["layers"].items()}
    for path in sorted(stored.keys() | found.keys()):
        ours, theirs = stored.get(path), found.get(path)
        if ours != theirs:
            raise InputError(f"peft.adapter: layer {path} is {ours} in the adapter but {theirs} in the base model")
    tensors = load_file(str(directory / WEIGHTS_FILE))
    for layer in adapter_layers(model):
        for variable in _saved_variables(layer):
            variable.assign(tensors[f"{layer.path}/{variable.name}"])
    for name in config.get("modules_to_save", []):
        for variable in model.get_layer(name).weights:
            if tuple(variable.shape) != tensors[variable.path].shape:
                raise InputError(
                    f"peft.adapter: {variable.path} is {tensors[variable.path].shape} in the adapter "
                    f"but {tuple(variable.shape)} in this model"
                )
            variable.assign(tensors[variable.path])
    return report


def _saved_variables(layer) -> list:
    return [*layer.adapter_variables, *layer.adapter_state]


def _method_settings(layer) -> dict:
    """What adapter_config.json records of the method: LoRA's rank, alpha and rsLoRA, or the bottleneck
    settings."""
    if layer.adapter_method == "bottleneck":
        return {"method": "bottleneck", "bottleneck": layer.adapter_settings.model_dump()}
    return {
        "method": layer.adapter_method,
        "rank": layer.adapter_rank,
        "alpha": layer.adapter_alpha,
        "rslora": layer.adapter_rslora,
    }
