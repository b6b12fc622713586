"""Recipes: the YAML schema, `base:` inheritance and `--set` overrides.

This module imports no ML library, so `kerasboost validate`, `show` and `--help` stay fast.
Every problem becomes a `RecipeError` whose one-line message names the file and the key path.
"""

from __future__ import annotations

import difflib
import glob
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from kerasboost.architectures import DEFAULT, NAMES, architecture, serving
from kerasboost.errors import RecipeError

BACKENDS = ("tensorflow", "jax", "torch")
BUILTIN_PREFIX = "builtin:"


class _Section(BaseModel):
    """Strict: an unknown key is an error, not silently ignored; frozen: a recipe is resolved once, when
    it is loaded (and `auto` values once, in `runner`, into a copy), and nothing changes it after that."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Section):
    """One source of a mixture: files (a path, directory or glob) and its share of the training samples."""

    path: str
    weight: float = Field(default=1.0, gt=0.0)


class DataConfig(_Section):
    # A path, directory, glob or built-in corpus; or a list of them; or a weighted mixture of
    # {path, weight} entries (weights need not sum to 1).
    source: str | list[str | SourceSpec] = "builtin:pydocs"
    format: Literal["auto", "text", "jsonl", "csv", "parquet", "arrow"] = "auto"
    document_split: Literal["line", "blank_line"] = "blank_line"
    field: str = "text"
    label_field: str = "label"
    max_documents: int | None = Field(default=None, gt=0)
    validation_source: str | list[str] | None = None
    validation_split: float = Field(default=0.05, ge=0.0, lt=1.0)
    sequence_length: int = Field(default=128, ge=8)
    vocabulary: str | None = None
    merges: str | None = None
    vocabulary_size: int = Field(default=8000, ge=100)
    # Train the vocabulary on a seeded sample of about this many MB of the training text (None: all of it):
    # the trainer's memory grows with the distinct words it has seen.
    vocabulary_sample_mb: float | None = Field(default=32.0, gt=0.0)
    lowercase: bool = True
    mask_rate: float = Field(default=0.15, gt=0.0, lt=1.0)
    max_predictions: int | None = Field(default=None, gt=0)
    next_sentence_rate: float = Field(default=0.5, ge=0.0, le=1.0)
    # Where the prepared token store lives (None: in the cache, keyed by its inputs).
    store: str | None = None
    # Processes that tokenise in parallel (None: one per core).
    num_workers: int | None = Field(default=None, gt=0)

    @property
    def sources(self) -> list[SourceSpec]:
        entries = [self.source] if isinstance(self.source, str) else list(self.source)
        return [entry if isinstance(entry, SourceSpec) else SourceSpec(path=entry) for entry in entries]

    @property
    def validation_sources(self) -> list[SourceSpec]:
        if self.validation_source is None:
            return []
        entries = [self.validation_source] if isinstance(self.validation_source, str) else self.validation_source
        return [SourceSpec(path=entry) for entry in entries]


class BackboneConfig(_Section):
    """Arguments of keras-hub's backbone constructor (the vocabulary size comes from the tokenizer)."""

    num_layers: int = Field(default=2, gt=0)
    num_heads: int = Field(default=2, gt=0)
    hidden_dim: int = Field(default=128, gt=0)
    intermediate_dim: int = Field(default=512, gt=0)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    max_sequence_length: int = Field(default=512, gt=0)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> BackboneConfig:
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})")
        return self


class ModelConfig(_Section):
    backbone: Literal[NAMES] = DEFAULT
    config: BackboneConfig = Field(default_factory=BackboneConfig)
    preset: str | None = None
    classifier_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


class BottleneckConfig(_Section):
    """Bottleneck adapters (peft.method: bottleneck): down-projection, activation, up-projection, residual.
    houlsby: after the attention and the feed-forward sublayer (Houlsby et al. 2019); pfeiffer: after the
    feed-forward sublayer only (Pfeiffer et al. 2021); parallel: beside the feed-forward sublayer, reading
    its input (He et al. 2022, who scale by 4)."""

    placement: Literal["houlsby", "pfeiffer", "parallel"] = "houlsby"
    reduction_factor: int = Field(default=16, gt=0)
    activation: Literal["swish", "relu", "gelu"] = "swish"
    scaling: float = Field(default=1.0, gt=0.0)


class AdaLoraConfig(_Section):
    """AdaLoRA (peft.method: adalora), with Hugging Face PEFT's names and defaults: every target starts at
    `init_rank`; after `tinit` steps the total rank falls on a cubic schedule to `target_rank` per target at
    `total steps - tfinal`, re-allocated every `delta_t` steps by importance (EMAs with beta1, beta2); the
    orthogonality regulariser is weighted `orth_reg_weight`. Scaling is peft.alpha / init_rank."""

    init_rank: int = Field(default=12, gt=0)
    target_rank: int = Field(default=8, gt=0)
    tinit: int = Field(default=0, ge=0)
    tfinal: int = Field(default=0, ge=0)
    delta_t: int = Field(default=1, gt=0)
    beta1: float = Field(default=0.85, gt=0.0, lt=1.0)
    beta2: float = Field(default=0.85, gt=0.0, lt=1.0)
    orth_reg_weight: float = Field(default=0.5, ge=0.0)

    @model_validator(mode="after")
    def _ranks(self) -> AdaLoraConfig:
        if self.target_rank > self.init_rank:
            raise ValueError(f"target_rank ({self.target_rank}) exceeds init_rank ({self.init_rank})")
        return self


class PeftConfig(_Section):
    """Adapters instead of full fine-tuning (see kerasboost/peft). `rank`, `alpha`, `rslora` and `init`
    shape LoRA and DoRA (AdaLoRA takes `alpha` and its own ranks); `targets` and `exclude` choose the
    projections LoRA, DoRA and AdaLoRA adapt, `bottleneck.placement` where bottleneck adapters sit."""

    method: Literal["lora", "dora", "adalora", "bottleneck"] = "lora"
    rank: int = Field(default=8, gt=0)
    alpha: float = Field(default=16.0, gt=0.0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    rslora: bool = False
    init: Literal["kaiming", "gaussian"] = "kaiming"
    targets: str | list[str] = Field(default_factory=lambda: ["query", "value"])
    exclude: list[str] = Field(default_factory=list)
    modules_to_save: list[str] = Field(default_factory=list)
    quantize_base: Literal["int8"] | None = None
    adapter: str | None = None
    bottleneck: BottleneckConfig = Field(default_factory=BottleneckConfig)
    adalora: AdaLoraConfig = Field(default_factory=AdaLoraConfig)


class LossWeights(_Section):
    """bert_pretraining's loss = mlm * MLM loss + nsp * NSP loss."""

    mlm: float = Field(default=1.0, ge=0.0)
    nsp: float = Field(default=1.0, ge=0.0)


class GenerateConfig(_Section):
    """causal_lm: continuations of `prompts` printed and logged to TensorBoard after training."""

    prompts: list[str] = Field(default_factory=list)
    max_length: int = Field(default=48, gt=0)
    strategies: list[Literal["greedy", "top_k", "top_p"]] = Field(default_factory=lambda: ["greedy", "top_k", "top_p"])
    top_k: int = Field(default=10, gt=0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    seed: int = Field(default=0, ge=0)


class MetricWatch(_Section):
    """An evaluation metric as metrics.jsonl names it (val_loss, val_accuracy, val_macro_f1, ...), and
    which way is better."""

    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"


class EarlyStoppingConfig(MetricWatch):
    # Evaluations without an improvement larger than min_delta before the run stops (transformers'
    # EarlyStoppingCallback counts the same way).
    patience: int = Field(default=3, gt=0)
    min_delta: float = Field(default=0.0, ge=0.0)


class TrainConfig(_Section):
    batch_size: int = Field(default=32, gt=0)
    steps: int | None = Field(default=None, gt=0)
    epochs: int | None = Field(default=None, gt=0)
    learning_rate: float = Field(default=5e-4, gt=0.0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = Field(default=0, ge=0)
    end_learning_rate: float = Field(default=0.0, ge=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    beta_1: float = Field(default=0.9, gt=0.0, lt=1.0)
    beta_2: float = Field(default=0.999, gt=0.0, lt=1.0)
    epsilon: float = Field(default=1e-6, gt=0.0)
    clip_norm: float | None = Field(default=1.0, gt=0.0)
    gradient_accumulation: int = Field(default=1, ge=1)
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    eval_every: int = Field(default=100, gt=0)
    eval_batches: int | None = Field(default=None, gt=0)
    jit_compile: bool | Literal["auto"] = "auto"
    steps_per_execution: PositiveInt | Literal["auto"] = "auto"
    kernels: Literal["auto", "keras"] = "auto"  # keras: Keras' own layers and AdamW, no kerasboost kernel
    # A NaN or Inf loss: `stop` the run before those weights are written anywhere, or `skip` the step's
    # update (counted, logged) and stop once more than max_skipped_steps were skipped.
    nonfinite: Literal["stop", "skip"] = "stop"
    max_skipped_steps: int = Field(default=10, ge=0)
    early_stopping: EarlyStoppingConfig | None = None
    # Mixes a uniform distribution into the targets of classification and masked-LM losses.
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _default_steps(cls, data: Any) -> Any:
        """1000 steps when neither steps nor epochs is given (set before validation: sections are frozen)."""
        if isinstance(data, dict) and data.get("steps") is None and data.get("epochs") is None:
            return {**data, "steps": 1000}
        return data

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainConfig:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give train.steps or train.epochs, not both")
        if self.batch_size % self.gradient_accumulation:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be divisible by "
                f"gradient_accumulation ({self.gradient_accumulation}): batch_size is the global batch"
            )
        per_period = self.eval_every * self.gradient_accumulation
        if self.steps_per_execution != "auto" and per_period % self.steps_per_execution:
            raise ValueError(
                f"steps_per_execution ({self.steps_per_execution}) must divide the {per_period} micro-batches of an "
                "evaluation period (eval_every x gradient_accumulation), so evaluations fall between executions"
            )
        return self


class LoggingConfig(_Section):
    every_steps: int = Field(default=10, gt=0)
    tensorboard: bool = True


class CheckpointConfig(_Section):
    every_steps: int | None = Field(default=None, gt=0)
    # Also checkpoint at the first optimizer step this long after the last checkpoint (preemptible machines).
    every_minutes: float | None = Field(default=None, gt=0.0)
    keep: int = Field(default=2, gt=0)
    # Also keep the best evaluation's checkpoint (checkpoints/best/, never pruned); exports use it.
    best: MetricWatch | None = None


class ExportConfig(_Section):
    preset: bool = True


class MeshConfig(_Section):
    """Device mesh: `batch` data-parallel replicas x `model` shards of each replica."""

    batch: int | None = Field(default=None, gt=0)
    model: int = Field(default=1, gt=0)


class DistributionConfig(_Section):
    """How a run spreads over devices and processes (see kerasboost/distribute).

    `train.batch_size` stays the global batch; each replica gets batch_size / replicas. The multi-process
    keys default to what the launcher set: torchrun's RANK/WORLD_SIZE/MASTER_ADDR, Keras'
    KERAS_DISTRIBUTION_* for JAX, TF_CONFIG for TensorFlow (or `kerasboost run --nproc N`).
    """

    strategy: Literal["none", "data_parallel", "model_parallel"] = "none"
    mesh: MeshConfig = Field(default_factory=MeshConfig)
    coordinator: str | None = Field(default=None, pattern=r"^[^\s:]+:\d+$")
    num_processes: int | None = Field(default=None, gt=0)
    process_id: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> DistributionConfig:
        if self.strategy != "model_parallel" and self.mesh.model > 1:
            raise ValueError(f"mesh.model={self.mesh.model} shards the model: it needs strategy: model_parallel")
        if self.strategy == "none" and (self.mesh.batch or 1) > 1:
            raise ValueError(f"mesh.batch={self.mesh.batch} needs strategy: data_parallel or model_parallel")
        if self.num_processes is not None and self.process_id is not None and self.process_id >= self.num_processes:
            raise ValueError(f"process_id ({self.process_id}) must be below num_processes ({self.num_processes})")
        return self


class Recipe(_Section):
    """A whole training job. Section and key names are the recipe's YAML keys."""

    name: str = Field(default="run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    seed: int = Field(default=0, ge=0)
    backend: Literal["tensorflow", "jax", "torch"] | None = None
    task: Literal["mlm", "bert_pretraining", "causal_lm", "classification"] = "mlm"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    peft: PeftConfig | None = None
    loss_weights: LossWeights = Field(default_factory=LossWeights)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    distribution: DistributionConfig = Field(default_factory=DistributionConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        if self.task not in architecture(self.model.backbone).tasks:
            raise ValueError(
                f"task {self.task} needs model.backbone: {' or '.join(serving(self.task))} (got {self.model.backbone})"
            )
        if self.data.sequence_length > self.model.config.max_sequence_length:
            raise ValueError(
                f"data.sequence_length ({self.data.sequence_length}) exceeds "
                f"model.config.max_sequence_length ({self.model.config.max_sequence_length})"
            )
        if self.peft is not None and self.peft.method == "adalora" and self.train.gradient_accumulation > 1:
            raise ValueError(
                "peft.method: adalora scores importance on each optimizer step's gradients: "
                "it needs train.gradient_accumulation: 1"
            )
        shards = self.distribution.mesh.model
        if shards > 1 and not self.model.preset:
            for key in ("num_heads", "hidden_dim", "intermediate_dim"):
                size = getattr(self.model.config, key)
                if size % shards:
                    raise ValueError(f"distribution.mesh.model ({shards}) must divide model.config.{key} ({size})")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# Loading


# The recipes that ship inside the package (recipes/ in a source checkout links here).
BUNDLED_RECIPES = Path(__file__).resolve().parent / "recipes"


def find_recipe(path: str | Path) -> Path:
    """`path`, or where no such file exists, the bundled recipe of that name (`mlm.yaml` or `mlm`)."""
    path = Path(path)
    if path.is_file() or path.parent != Path("."):
        return path
    for name in (path.name, f"{path.name}.yaml"):
        if (BUNDLED_RECIPES / name).is_file():
            return BUNDLED_RECIPES / name
    return path


def load_recipe(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), values: dict[str, Any] | None = None
) -> Recipe:
    """Loads `path` (or the bundled recipe of that name), resolves `base:` files, applies `key.path=value`
    overrides, then `values` (settings that command-line options such as `eval --data` stand for, by
    dotted key), and validates."""
    path = find_recipe(path)
    raw = _load_with_bases(path, stack=())
    for override in overrides:
        _apply_override(raw, override)
    for key, value in (values or {}).items():
        _set_value(raw, key.split("."), value)
    return _validate(raw, source=str(path))


MAX_RECIPE_BYTES = 1 << 20
MAX_RECIPE_NODES = 100_000  # values after anchors and aliases are expanded


def _read_yaml(path: Path) -> dict:
    """A recipe file's mapping, refused in one line when it is no recipe: missing, too big, not UTF-8,
    bad YAML, empty, or an alias bomb (anchors that expand past MAX_RECIPE_NODES values)."""
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: {path.stat().st_size:,} bytes; a recipe holds at most {MAX_RECIPE_BYTES:,}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"{path}: YAML syntax error: {where}{problem}") from None
    if data is None:
        raise RecipeError(f"{path}: the recipe is empty (give at least a task, or base: another recipe)")
    if _expanded_size(data, {}, set()) > MAX_RECIPE_NODES:
        raise RecipeError(f"{path}: anchors and aliases expand to more than {MAX_RECIPE_NODES:,} values")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data


def _expanded_size(value: Any, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values `value` holds once aliases are copied out; each shared node is sized once, so
    this takes time linear in the file however far its aliases would expand."""
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key in sizes:
        return sizes[key]
    if key in open_:
        return MAX_RECIPE_NODES + 1  # an alias to its own ancestor never ends
    open_.add(key)
    children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_)
        if total > MAX_RECIPE_NODES:
            break
    open_.discard(key)
    sizes[key] = total
    return total


def _load_with_bases(path: Path, stack: tuple[Path, ...]) -> dict:
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise RecipeError(f"{path}: base: cycle: {chain}")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(f"{path}: base: must be a path to another recipe, got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise RecipeError(f"{path}: base: file not found: {base_path}")
    return _deep_merge(_load_with_bases(base_path, (*stack, resolved)), data)


def _deep_merge(base: dict, child: dict) -> dict:
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_override(raw: dict, override: str) -> None:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {override}: expected KEY.PATH=VALUE, e.g. train.batch_size=8")
    parts = key.split(".")
    _check_path(parts, where=f"--set {key}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    _set_value(raw, parts, value)


def _set_value(raw: dict, parts: list[str], value: Any) -> None:
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _check_path(parts: list[str], where: str) -> None:
    """Rejects an override path that the schema does not have, with a did-you-mean hint."""
    model: Any = Recipe
    for depth, part in enumerate(parts):
        fields = _section_fields(model)
        if fields is None:
            raise RecipeError(f"{where}: '{'.'.join(parts[:depth])}' is a value, not a section")
        if part not in fields:
            prefix = ".".join(parts[:depth])
            where_in = f"'{prefix}'" if prefix else "the recipe"
            raise RecipeError(f"{where}: unknown key '{part}' in {where_in}{_did_you_mean(part, fields)}")
        model = fields[part].annotation


def _section_fields(annotation: Any) -> dict | None:
    """The fields of a section type, also when it is optional (`Optional[PeftConfig]`)."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate.model_fields
    return None


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _validate(raw: dict, source: str) -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise RecipeError(f"{source}: {_describe(err)}") from None


def _describe(err: ValidationError) -> str:
    """One line for the first schema error: the key path, what is wrong, and a hint."""
    errors = err.errors()
    first = max(errors, key=lambda error: len(error["loc"]))  # of a union's branches, the one that got deepest
    loc = [str(p) for p in first["loc"] if not str(p).startswith(("str", "list[")) and not str(p)[:1].isupper()]
    key = ".".join(loc) or "recipe"
    if first["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        hint = _did_you_mean(loc[-1], _section_fields(parent) or {}) if parent else ""
        message = f"{key}: unknown key{hint}"
    else:
        text = first["msg"].removeprefix("Value error, ")
        message = (
            f"{key}: {text} (got {first['input']!r})"
            if "input" in first and first["type"] != "value_error"
            else f"{key}: {text}"
        )
    more = len(errors) - 1
    return message + (f" (+{more} more error{'s' if more > 1 else ''})" if more else "")


def _model_at(parts: list[str]) -> Any:
    model: Any = Recipe
    for part in parts:
        fields = _section_fields(model)
        if not fields or part not in fields:
            return None
        model = fields[part].annotation
    return model


# ---------------------------------------------------------------------------------------------
# Files a recipe refers to


def check_files(recipe: Recipe, source: str = "recipe") -> None:
    """Fails early, before any run directory exists, if a data or vocabulary file is missing."""
    for key, specs in (
        ("data.source", recipe.data.sources),
        ("data.validation_source", recipe.data.validation_sources),
    ):
        for spec in specs:
            if spec.path.startswith(BUILTIN_PREFIX):
                continue
            if not glob.glob(spec.path):
                raise RecipeError(f"{source}: {key}: no file matches '{spec.path}'")
    for key in ("vocabulary", "merges"):
        path = getattr(recipe.data, key)
        if path and not Path(path).is_file():
            raise RecipeError(f"{source}: data.{key}: file not found: {path}")
    spec = architecture(recipe.model.backbone)
    if spec.vocabulary == "byte_bpe" and bool(recipe.data.vocabulary) != bool(recipe.data.merges):
        raise RecipeError(
            f"{source}: data.vocabulary and data.merges: a {spec.title} tokenizer needs both files, or neither"
        )
    if recipe.model.preset and not Path(recipe.model.preset).is_dir():
        raise RecipeError(f"{source}: model.preset: not a local directory: {recipe.model.preset}")
