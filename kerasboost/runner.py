"""`kerasboost run`: recipe -> run directory -> data and model -> training -> export.

Called after `backend.select_backend`, so importing keras here fixes the chosen backend.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras

from kerasboost.backend import Precision, jit_compile, seed_everything, steps_per_execution, use_precision, versions
from kerasboost.data.pipeline import evaluation_batches
from kerasboost.data.prepare import PreparedData, prepare_data
from kerasboost.data.tokenizer import build_tokenizer
from kerasboost.distribute import Distributed
from kerasboost.distribute import setup as setup_distribution
from kerasboost.errors import InputError
from kerasboost.export import export_onnx, export_preset, merged_backbone, plain_backbone
from kerasboost.models.dropout import pack_dropouts
from kerasboost.models.flat_einsum import use_flat_einsums
from kerasboost.models.fused_gelu import fuse_gelus
from kerasboost.models.hugging_face import save_pretrained
from kerasboost.models.layer_norm import use_closed_form_layer_norms
from kerasboost.models.masked_softmax import use_additive_masks
from kerasboost.peft.adalora import RankAllocator, adaptive_layers
from kerasboost.peft.adapter import load_adapter, save_adapter
from kerasboost.peft.hf_format import export_peft, import_peft, is_peft_adapter
from kerasboost.peft.inject import adapter_layers, apply_peft, mergeable, refuse_merging
from kerasboost.recipe import ModelConfig, PeftConfig, Recipe, TrainConfig, load_recipe
from kerasboost.rundir import RunDir, discard, existing_run_dir, locked, new_run_dir
from kerasboost.tasks import prepare_task, task_model
from kerasboost.tasks.task import Task
from kerasboost.train.checkpoints import Checkpoint, check_room, load_weights, newest_intact, restore_checkpoint
from kerasboost.train.flops import Speed, compute_dtype, flops_per_token, matmul_peak
from kerasboost.train.guards import Preemption
from kerasboost.train.logging import RunLog, forget_after
from kerasboost.train.loop import train, validation_metrics
from kerasboost.train.optimizer import build_optimizer
from kerasboost.version import __version__


def run(recipe: Recipe, output_dir: str | None = None, resume: bool = False) -> RunDir:
    """Trains `recipe` in a new run directory (or continues the one `resume` names) and exports it.

    In a distributed run every process calls this; only the primary one prints and writes the run
    directory (the others keep their files in a scratch directory that is deleted at the end).
    """
    seed_everything(recipe.seed)  # before the engine starts: JAX's processes then agree on it without a collective
    distributed = setup_distribution(recipe.distribution, recipe.train, recipe.model.backbone, keras.backend.backend())
    try:
        with _quiet_unless(distributed.primary), tempfile.TemporaryDirectory(prefix="kerasboost-rank-") as scratch:
            return _run(recipe, distributed, output_dir, resume, Path(scratch))
    finally:
        distributed.close()


def _run(recipe: Recipe, distributed: Distributed, output_dir: str | None, resume: bool, scratch: Path) -> RunDir:
    started = time.perf_counter()
    found = versions()
    print(
        f"kerasboost {__version__} · backend {keras.backend.backend()} · "
        + " · ".join(f"{k} {v}" for k, v in found.items()),
        flush=True,
    )
    precision = use_precision(recipe.train.precision)
    recipe = _resolved(recipe, precision)
    with contextlib.ExitStack() as held:
        run_dir = existing_run_dir(recipe.name, output_dir) if resume else None
        if run_dir is not None and distributed.primary:
            held.enter_context(locked(run_dir))  # before anything is written into it
        data = prepare_data(
            recipe, run_dir, progress=sys.stdout
        )  # before the run directory is made: bad data leaves nothing behind
        fresh = run_dir is None
        if distributed.primary:
            if fresh:
                run_dir = held.enter_context(locked(new_run_dir(recipe.name, output_dir)))
            run_dir.recipe_file.write_text(recipe.to_yaml(), encoding="utf-8")  # first: a started run can --resume
        checkpoint = newest_intact(run_dir.checkpoints, warn=_say) if resume else None
        if not distributed.primary:
            run_dir = _scratch_copy(run_dir, scratch)
        preemption = held.enter_context(Preemption().installed())  # a signal while the model builds: no step
        try:
            task, total_steps, log, speed = _start(recipe, precision, run_dir, data, distributed, checkpoint, resume)
            start_step = checkpoint.step if checkpoint else 0
            resumed = checkpoint.state if checkpoint else None
            result = train(task, recipe, run_dir, log, start_step, total_steps, distributed, speed, resumed, preemption)
        except BaseException:
            if fresh and distributed.primary and newest_intact(run_dir.checkpoints) is None:
                discard(run_dir)  # no checkpoint yet: nothing to keep, nothing that blocks a retry
            raise
        replicas = distributed.check_replicas(task.model)
        if replicas:
            print(replicas, flush=True)
        _report_outcome(run_dir, result, distributed.primary)
        allocator = getattr(task.model.optimizer, "rank_allocator", None)
        if allocator is not None and distributed.primary:
            print("\n".join(allocator.describe()), flush=True)
        best = newest_intact(run_dir.checkpoints / "best") if recipe.checkpoint.best else None
        if best is not None:
            load_weights(task.model, best)
            print(f"exports are made from the best checkpoint, step {best.step}", flush=True)
        if distributed.saves_weights:  # the weights were checked finite when their checkpoint was written
            if recipe.export.preset and not mergeable(task.model):
                print(
                    "preset: none (bottleneck adapters cannot be merged into a keras-hub preset): the adapters "
                    "are in adapter/, and `kerasboost export --format saved_model` holds the whole model",
                    flush=True,
                )
            elif recipe.export.preset:
                export_preset(task.backbone, task.tokenizer, run_dir.preset)
            if recipe.peft is not None:
                save_adapter(task.model, task.backbone, run_dir.adapter, recipe.peft.modules_to_save)
    _print_summary(run_dir, result, speed, time.perf_counter() - started)
    return run_dir


def _start(
    recipe: Recipe,
    precision: Precision,
    run_dir: RunDir,
    data: PreparedData,
    distributed: Distributed,
    checkpoint: Checkpoint | None,
    resume: bool,
):
    """Everything before the first step: tokenizer files, the task (restored from `checkpoint`), the
    printed description of the run, and its log with anything past the checkpoint forgotten."""
    data.save_tokenizer(run_dir)
    print(f"run directory: {run_dir.root}", flush=True)
    task, total_steps = build_task(recipe, run_dir, data, distributed)
    start_step = 0
    with distributed.scope():
        if checkpoint is not None:
            restore_checkpoint(task.model, checkpoint)
            start_step = checkpoint.step
            print(f"resuming from {checkpoint.path} at step {start_step}", flush=True)
        elif resume:
            print(f"{run_dir.checkpoints} holds no checkpoint yet: training again from step 0", flush=True)
        task.model.optimizer.build(task.model.trainable_variables)  # on every process alike
        if distributed.saves_weights:
            check_room(task.model, run_dir.checkpoints)  # a full disk fails now, not after the first period
    distributed.prepare(task.model)
    for line in task.summary:
        print(line, flush=True)
    speed = Speed(flops_per_token(task), matmul_peak(compute_dtype()) * distributed.devices)
    print(
        _describe_model(recipe.model, task.model, precision) + f" · {speed.flops_per_token / 1e6:,.1f} MFLOP per token",
        flush=True,
    )
    print(_describe_schedule(recipe.train, total_steps, task.model.steps_per_execution), flush=True)
    layout = [
        distributed.describe(recipe.train.batch_size, recipe.train.gradient_accumulation),
        distributed.describe_model(task.model),
    ]
    for line in filter(None, layout):
        print(line, flush=True)

    if resume and distributed.primary:
        forget_after(run_dir.logs, run_dir.metrics_file, start_step if checkpoint else -1)
    log = RunLog(run_dir.logs, run_dir.metrics_file, recipe.logging.tensorboard and distributed.primary)
    if start_step == 0:
        log.text("recipe", start_step, "```\n" + recipe.to_yaml() + "```")
        log.text("distribution", start_step, "\n\n".join(filter(None, layout)))
    return task, total_steps, log, speed


def _report_outcome(run_dir: RunDir, result, primary: bool) -> None:
    """Prints and records (outcome.json) where the run ended, why, and which step was best."""
    outcome = {"final_step": result.final_step, "stopped": result.stopped or "reached train.steps"}
    for role, watch in result.watches.items():
        outcome[role] = {"metric": watch.metric, "mode": watch.mode, "best": watch.best, "step": watch.best_step}
    if result.stopped:
        print(result.stopped, flush=True)
    if "best" in result.watches and result.watches["best"].best_step is not None:
        print(f"best checkpoint: {result.watches['best'].describe()}", flush=True)
    if primary:
        run_dir.outcome_file.write_text(json.dumps(outcome, indent=1) + "\n", encoding="utf-8")


def _say(line: str) -> None:
    print(line, flush=True)


def _note(line: str) -> None:
    """For commands whose stdout is their output (predict's JSON lines): notes go to stderr."""
    print(line, file=sys.stderr, flush=True)


def swap_faster_kernels(model, config: TrainConfig, compiled: bool | None) -> dict[str, int]:
    """Gives `model`'s layers kerasboost's faster kernels where they were measured faster (`compiled`:
    the resolved `jit_compile`); how many of each, by what they do. None with `train.kernels: keras`."""
    if config.kernels == "keras":
        return {}
    without_xla = compiled is False
    return {
        "dropout layers use PackedDropout": pack_dropouts(model),
        "GELUs run as XLA kernels": fuse_gelus(model, graph_mode=config.jit_compile == "auto" and without_xla),
        "layer norms use a closed-form gradient": use_closed_form_layer_norms(model, without_xla),
        "attention projections run as one matmul": use_flat_einsums(model, without_xla),
        "attention softmaxes add their mask": use_additive_masks(model, without_xla),
    }


def build_task(recipe: Recipe, run_dir: RunDir, data: PreparedData, distributed: Distributed):
    """The recipe's task with its adapters, compiled (inside the engine's scope); and the run's steps."""
    seed_everything(recipe.seed)
    with distributed.scope():
        task = prepare_task(recipe, run_dir, data)
        if recipe.peft is not None:
            report = _add_adapters(task, recipe)
            for line in report.lines():
                print(line, flush=True)
        compiled = jit_compile(recipe.train.jit_compile)
        kernels = swap_faster_kernels(task.model, recipe.train, compiled)
        if any(kernels.values()):
            print("kernels: " + " · ".join(f"{count} {what}" for what, count in kernels.items() if count), flush=True)
        total_steps = _total_steps(recipe.train, task.batches.train.rows)
        adaptive = adaptive_layers(task.model)
        allocator = RankAllocator(adaptive, recipe.peft.adalora, total_steps) if adaptive else None
        task.model.compile(
            optimizer=build_optimizer(recipe.train, total_steps, allocator),
            loss=task.loss,
            loss_weights=task.loss_weights,
            weighted_metrics=task.metrics,
            jit_compile=compiled,
            steps_per_execution=steps_per_execution(
                recipe.train, recipe.logging.every_steps, distributed.several_steps_per_call
            ),
        )
    return task, total_steps


def _quiet_unless(primary: bool):
    """Processes other than the primary one print nothing (errors still reach stderr)."""
    return contextlib.nullcontext() if primary else contextlib.redirect_stdout(io.StringIO())


def _scratch_copy(run_dir: RunDir | None, scratch: Path) -> RunDir:
    """A non-primary process's own run directory: the tokenizer files of the run it resumes (so it
    tokenises exactly as the primary does), and room for files nobody keeps."""
    own = RunDir(scratch)
    if run_dir is not None:
        for name in ("vocabulary_file", "bpe_vocabulary_file", "merges_file", "labels_file"):
            if getattr(run_dir, name).is_file():
                shutil.copy(getattr(run_dir, name), getattr(own, name))
    return own


def evaluate(recipe: Recipe, run: Path | None) -> dict[str, float]:
    """The task's validation metrics for the newest checkpoint of `run` (with its tokenizer and labels),
    or, without a run, for the model the recipe loads (a preset: its task heads start untrained)."""
    with tempfile.TemporaryDirectory() as scratch:
        if run is not None:
            trained = load_trained(run, recipe)
            task, run_dir = trained.task, trained.run_dir
        else:
            run_dir = RunDir(Path(scratch))
            task = _prepared_task(recipe, run_dir)
            print(
                f"warning: {recipe.model.preset} holds a backbone only; the {recipe.task} head is untrained", flush=True
            )
        task.model.compile(
            loss=task.loss,
            loss_weights=task.loss_weights,
            weighted_metrics=task.metrics,
            jit_compile=jit_compile(recipe.train.jit_compile),
        )
        validation = evaluation_batches(
            task.batches.validation,
            task.batches.transform,
            recipe.train.batch_size,
            recipe.seed + 1,
            recipe.train.eval_batches,
        )
        return validation_metrics(
            task, validation, RunLog(run_dir.logs, run_dir.metrics_file, tensorboard=False), step=0
        )


@dataclass
class TrainedRun:
    """A run's task rebuilt with its tokenizer and labels, holding the weights of its newest checkpoint."""

    task: Task
    run_dir: RunDir
    recipe: Recipe
    step: int


def load_trained(run: str | Path, recipe: Recipe | None = None, with_data: bool = True) -> TrainedRun:
    """The one way to load a trained run (eval, export, merge, predict): its recipe.yaml unless `recipe` is
    given, the tokenizer and labels of its run directory, and the weights of its newest checkpoint. Without
    `with_data` (predict, export) nothing of its corpus is read: the run directory alone is enough."""
    run_dir = RunDir(Path(run).resolve())
    recipe = recipe or load_recipe(run_dir.recipe_file)
    checkpoint = newest_intact(run_dir.checkpoints / "best", warn=_note) if recipe.checkpoint.best else None
    if checkpoint is not None:
        _note(f"using the best checkpoint, step {checkpoint.step} (checkpoint.best)")
    checkpoint = checkpoint or newest_intact(run_dir.checkpoints, warn=_note)
    if checkpoint is None:
        raise InputError(f"{run_dir.checkpoints}: the run holds no intact checkpoint")
    task = _prepared_task(recipe, run_dir, with_data)
    load_weights(task.model, checkpoint)
    return TrainedRun(task, run_dir, recipe, checkpoint.step)


def _prepared_task(recipe: Recipe, run_dir: RunDir, with_data: bool = True) -> Task:
    """The recipe's task (and adapters) under its precision, for using a model rather than training it;
    without `with_data`, its model alone, with the tokenizer and labels the run directory holds."""
    use_precision(recipe.train.precision)
    if with_data:
        task = prepare_task(recipe, run_dir, prepare_data(recipe, run_dir))
    else:
        with tempfile.TemporaryDirectory() as scratch:  # the run's own files are read, not written
            tokenizer = build_tokenizer(recipe.model, recipe.data, RunDir(Path(scratch)), trained=run_dir)
        labels = json.loads(run_dir.labels_file.read_text(encoding="utf-8")) if run_dir.labels_file.is_file() else None
        task = task_model(recipe, tokenizer, labels)
    if recipe.peft is not None:
        _add_adapters(task, recipe)
    return task


def export_run(run: str, form: str, out: str | None) -> Path:
    """`kerasboost export --format FORM` and `kerasboost merge` (`form` "merge": the preset of a run that
    has adapters). A "preset" is always the trained model (adapters merged in) as keras-hub loads it; the
    "base" is the frozen model an adapter run trained on; "adapter" and "peft" hold the adapters alone;
    "transformers" is the trained model (adapters merged in) as transformers' class for the task;
    "saved_model" the task's model as a TensorFlow SavedModel and "onnx" as an ONNX file (Keras
    `model.export`; the CLI refuses both off the tensorflow backend, where these models do not export).
    Bottleneck adapters cannot be merged, and PEFT has none: "merge", "preset", "transformers" and "peft"
    refuse them."""
    recipe = load_recipe(RunDir(Path(run).resolve()).recipe_file) if form == "onnx" else None
    if recipe is not None:  # ONNX Runtime runs float32 on CPU: the exported graph is built in float32
        recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"precision": "float32"})})
    trained = load_trained(run, recipe, with_data=False)
    task, run_dir, recipe = trained.task, trained.run_dir, trained.recipe
    directory = Path(out) if out else run_dir.root / ("export-merged" if form == "merge" else f"export-{form}")
    if form in ("base", "merge") and not adapter_layers(task.model):
        what = "merge" if form == "merge" else "export --format base"
        raise InputError(f"{what}: {run_dir.root} was trained without adapters; its model is --format preset")
    if form in ("merge", "preset", "transformers", "peft"):
        why = "Hugging Face PEFT has none" if form == "peft" else "they cannot be merged into the base weights"
        refuse_merging(task.model, "merge" if form == "merge" else f"export --format {form}", why)
    if form == "adapter":
        return save_adapter(task.model, task.backbone, directory, recipe.peft.modules_to_save if recipe.peft else [])
    if form == "peft":
        peft = recipe.peft or PeftConfig()
        return export_peft(
            task.model, task.backbone, directory, peft.modules_to_save, peft.adalora, recipe.train.steps or trained.step
        )
    if form == "base":
        return export_preset(plain_backbone(task.backbone, merge=False), task.tokenizer, directory)
    if form == "saved_model":
        task.model.export(str(directory), format="tf_saved_model", verbose=False)
        return directory
    if form == "onnx":
        return export_onnx(task.model, directory, recipe.data.sequence_length)
    if form == "transformers":
        labels = json.loads(run_dir.labels_file.read_text(encoding="utf-8")) if run_dir.labels_file.is_file() else None
        merged = merged_backbone(task.backbone)
        return save_pretrained(task.model, merged, task.tokenizer, recipe.task, labels, directory)
    return export_preset(task.backbone, task.tokenizer, directory)


def _add_adapters(task, recipe: Recipe):
    """Wraps the recipe's target layers with new adapters, or with those of `peft.adapter`."""
    adapter = Path(recipe.peft.adapter) if recipe.peft.adapter else None
    if adapter is not None and is_peft_adapter(adapter):
        return import_peft(task.model, task.backbone, adapter, recipe.peft, recipe.seed)
    if adapter is not None:
        return load_adapter(task.model, task.backbone, adapter, recipe.peft, recipe.seed)
    return apply_peft(task.model, recipe.peft, recipe.seed)


def _resolved(recipe: Recipe, precision: Precision) -> Recipe:
    """The recipe with `auto` precision replaced by what it resolved to: the one copy a run passes on and
    records in its recipe.yaml."""
    return recipe.model_copy(update={"train": recipe.train.model_copy(update={"precision": precision.policy})})


def _total_steps(config: TrainConfig, num_examples: int) -> int:
    """`train.steps`, or `train.epochs` full passes over the training examples."""
    if config.steps is not None:
        return config.steps
    return max(1, config.epochs * (num_examples // config.batch_size))


def _describe_model(config: ModelConfig, model: keras.Model, precision: Precision) -> str:
    params = model.count_params()
    source = config.preset or "config " + ", ".join(f"{k}={v}" for k, v in config.config.model_dump().items())
    return f"model: {config.backbone} ({source}) · {params:,} parameters · precision {precision}"


def _describe_schedule(config: TrainConfig, total_steps: int, executed: int) -> str:
    micro = config.batch_size // config.gradient_accumulation
    accumulation = f" ({config.gradient_accumulation} x {micro})" if config.gradient_accumulation > 1 else ""
    line = (
        f"training: {total_steps} steps · batch {config.batch_size}{accumulation} · "
        f"learning rate {config.learning_rate:g} ({config.schedule}, {config.warmup_steps} warm-up steps) · "
        f"evaluation every {config.eval_every} steps"
    )
    if executed > 1 or config.steps_per_execution not in ("auto", 1):
        line += f" · {executed} micro-batches per compiled call"
        line += " (Keras' PyTorch trainer runs one)" if keras.backend.backend() == "torch" else ""
    return line


def _print_summary(run_dir: RunDir, result, speed: Speed, seconds: float) -> None:
    root = run_dir.root
    lines = [f"done: step {result.final_step} in {seconds:.0f} s"]
    if not math.isnan(result.steady_tokens_per_second):
        lines[0] += (
            f" · steady state {result.steady_tokens_per_second:,.0f} tokens/s "
            f"· MFU {speed.mfu(result.steady_tokens_per_second):.1%}"
        )
    lines += [
        f"  recipe       {run_dir.recipe_file}",
        f"  metrics      {run_dir.metrics_file}",
        f"  checkpoints  {run_dir.checkpoints}",
    ]
    if run_dir.preset.is_dir():
        lines.append(
            f"  preset       {run_dir.preset}  (keras_hub.models.Backbone.from_preset({str(run_dir.preset)!r}))"
        )
    lines.append(f"  tensorboard  tensorboard --logdir {Path(root) / 'logs'}")
    print("\n".join(lines), flush=True)
