"""The `kerasboost` command line.

Exit codes: 0 success; 2 bad recipe, data or usage (one line naming the file or key); 1 runtime
failure (short message; traceback with --debug). Only `run` imports keras, after choosing the backend.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import traceback
from pathlib import Path

import click
import yaml

from kerasboost.distribute import check_strategy
from kerasboost.errors import InputError, RunFailure
from kerasboost.recipe import BACKENDS, BUNDLED_RECIPES, check_files, find_recipe, load_recipe
from kerasboost.version import __version__

# bench --quick: a tiny model, to check that the tool works (its numbers mean nothing).
_QUICK_BENCH = (
    "model.config.num_layers=2",
    "model.config.num_heads=2",
    "model.config.hidden_dim=32",
    "model.config.intermediate_dim=64",
    "model.config.max_sequence_length=32",
    "data.sequence_length=32",
    "data.vocabulary_size=1000",
    "data.max_documents=300",
    "train.batch_size=8",
)
_SET_HELP = "Override a recipe key, typed by the schema, e.g. --set train.batch_size=8 (repeatable)."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kerasboost")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Train language models with Keras 3 on TensorFlow, JAX or PyTorch from YAML recipes."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (beats KERAS_BACKEND and the recipe).")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Run directory (default runs/<name>/<timestamp>).")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --output-dir (default runs/<name>/latest) from its last checkpoint.",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Start this many processes on this host (distribution.strategy must not be none).",
)
@click.pass_context
def run(
    ctx: click.Context,
    recipe: str,
    overrides: tuple[str, ...],
    backend: str | None,
    output_dir: str | None,
    resume: bool,
    nproc: int,
) -> None:
    """Train the model that RECIPE describes."""
    from kerasboost.backend import resolve_backend, select_backend

    loaded = load_recipe(recipe, overrides)
    check_files(loaded, source=recipe)
    chosen = resolve_backend(backend, loaded.backend)
    check_distribution(loaded, chosen, nproc)
    if nproc > 1:
        from kerasboost.distribute.launch import launch

        args = [recipe, *_set_args(overrides), "--backend", chosen]
        args += [*(["--output-dir", output_dir] if output_dir else []), *(["--resume"] if resume else [])]
        sys.exit(launch(args, nproc, chosen, debug=ctx.obj["debug"]))
    select_backend(chosen)
    from kerasboost.runner import run as run_recipe

    run_recipe(loaded, output_dir=output_dir, resume=resume)


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def prepare(recipe: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Read RECIPE's data, train its vocabulary if it has none, and write the token store that `run` reads.

    Progress goes to stderr; `run` reuses a store prepared for the same inputs and settings.
    """
    from kerasboost.backend import resolve_backend, select_backend

    loaded = load_recipe(recipe, overrides)
    check_files(loaded, source=recipe)
    select_backend(resolve_backend(None, loaded.backend))
    from kerasboost.data.prepare import prepare_data

    prepared = prepare_data(loaded)
    stats = prepared.stats
    summary = {
        "store": str(prepared.store.directory),
        "reused": stats["reused"],
        "documents": stats["documents"]["train"] + stats["documents"]["validation"],
        "tokens": stats["tokens"],
        "train_rows": stats["train_rows"],
        "validation_rows": stats["validation_rows"],
        "bytes": prepared.store.bytes,
        "seconds": round(stats["seconds"], 3),
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    how = "reused" if summary["reused"] else f"prepared in {summary['seconds']:.1f} s"
    click.echo(
        f"store {summary['store']} ({how}): {summary['documents']:,} documents, {summary['tokens']:,} tokens, "
        f"{summary['train_rows']:,} training / {summary['validation_rows']:,} validation rows, "
        f"{summary['bytes'] / 1e6:,.1f} MB"
    )


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--steps", type=click.IntRange(min=2), default=30, show_default=True, help="Optimizer steps to time.")
@click.option(
    "--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Steps left out of the median."
)
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (beats KERAS_BACKEND and the recipe).")
@click.option(
    "--backends", help="Comma-separated backends, each measured in its own process, e.g. jax,tensorflow,torch."
)
@click.option("--quick", is_flag=True, help="A tiny model and 3 steps: checks the tool, measures nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option(
    "--profile",
    type=click.Path(file_okay=False),
    help="Also profile up to 10 steps with the backend's profiler: "
    "a trace under DIR/<backend> (TensorBoard) and the operations that took the most time.",
)
def bench(
    recipe: str,
    overrides: tuple[str, ...],
    steps: int,
    warmup: int,
    backend: str | None,
    backends: str | None,
    quick: bool,
    as_json: bool,
    profile: str | None,
) -> None:
    """Measure how fast RECIPE trains here: tokens/s, step time, compile time, MFU and memory."""
    from kerasboost.backend import resolve_backend

    if quick:
        overrides, steps, warmup = (*_QUICK_BENCH, *overrides), 3, 1
    loaded = load_recipe(recipe, overrides)
    check_files(loaded, source=recipe)
    chosen = [name.strip() for name in backends.split(",")] if backends else [resolve_backend(backend, loaded.backend)]
    unknown = [name for name in chosen if name not in BACKENDS]
    if unknown:
        raise InputError(f"--backends: unknown backend '{unknown[0]}' (choose from {', '.join(BACKENDS)})")
    if len(chosen) == 1:
        rows = [_bench_here(loaded, chosen[0], steps, warmup, profile)]
    else:
        rows = [_bench_in_process(recipe, overrides, name, steps, warmup, profile) for name in chosen]
    from kerasboost.bench import format_profile, format_table, normalise_mfu

    rows = normalise_mfu(rows)
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows if profile else []:
        click.echo(format_profile(row) + "\n")
    click.echo(format_table(rows))


def _bench_here(recipe, backend: str, steps: int, warmup: int, profile: str | None) -> dict:
    from kerasboost.backend import select_backend

    select_backend(backend)
    from kerasboost.bench import benchmark

    return benchmark(recipe, steps, warmup, Path(profile) / backend if profile else None)


def _bench_in_process(recipe: str, overrides, backend: str, steps: int, warmup: int, profile: str | None) -> dict:
    """One backend in a fresh interpreter (keras fixes its backend at import); its JSON row back."""
    import subprocess

    args = [sys.executable, "-m", "kerasboost", "bench", recipe, *_set_args(overrides)]
    args += [
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
        "--backend",
        backend,
        "--json",
        *(["--profile", profile] if profile else []),
    ]
    process = subprocess.run(args, capture_output=True, text=True)
    if process.returncode != 0:
        lines = process.stderr.strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"bench on {backend} failed: {lines[-1]}")
    return json.loads(process.stdout.strip().splitlines()[-1])[0]


@cli.command("eval")
@click.argument("target", type=click.Path())
@click.option(
    "--from",
    "source",
    type=click.Path(),
    help="A run directory (newest checkpoint) or a preset directory; default TARGET when it is a run directory.",
)
@click.option("--data", type=click.Path(), help="Evaluate on this file instead of the recipe's validation data.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (beats KERAS_BACKEND and the recipe).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
def evaluate(
    target: str, source: str | None, data: str | None, overrides: tuple[str, ...], backend: str | None, as_json: bool
) -> None:
    """Compute a trained model's task metrics on its validation data (or --data). TARGET is a run directory
    (its recipe.yaml and newest checkpoint) or a recipe file, with --from the run or preset to evaluate."""
    from kerasboost.backend import resolve_backend, select_backend

    recipe = target
    if Path(target).is_dir():
        recipe = str(_run_recipe_file(target))
        source = source or target
    if source is None:
        raise InputError(f"--from: give the run or preset directory to evaluate with {target}")
    if not Path(source).is_dir():
        raise InputError(f"--from: {source} is not a directory")
    if data is not None and not Path(data).is_file():
        raise InputError(f"--data: file not found: {data}")
    run = Path(source) if (Path(source) / "checkpoints").is_dir() else None
    values = {"data.validation_source": data} if data is not None else {}
    if run is None:
        values["model.preset"] = source
    loaded = load_recipe(recipe, overrides, values)
    check_files(loaded, source=recipe)
    select_backend(resolve_backend(backend, loaded.backend))
    from kerasboost.runner import evaluate as evaluate_recipe

    metrics = evaluate_recipe(loaded, run)
    if as_json:
        click.echo(json.dumps(metrics))
        return
    width = max(len(name) for name in metrics)
    click.echo(f"{'metric':<{width}}  value")
    for name, value in metrics.items():
        click.echo(f"{name:<{width}}  {value:.4f}")


_SAMPLING = (
    click.option("--max-length", type=click.IntRange(min=2), help="causal_lm: tokens per text, prompt included."),
    click.option("--strategy", type=click.Choice(["greedy", "top_k", "top_p"]), default="greedy", show_default=True),
    click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the top_k / top_p sampler."),
)


def _sampling_options(command):
    for option in reversed(_SAMPLING):
        command = option(command)
    return command


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--input", "input_file", type=click.Path(dir_okay=False), help="TXT (one per line), JSONL or CSV.")
@click.option("--text", "texts", multiple=True, help="A text to predict for (repeatable).")
@click.option("--output", type=click.Path(dir_okay=False), help="JSONL file to write (default: stdout).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Fills per mask; top_k's k.")
@_sampling_options
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (beats KERAS_BACKEND and the recipe).")
def predict(
    run_dir: str,
    input_file: str | None,
    texts: tuple[str, ...],
    output: str | None,
    batch_size: int,
    top_k: int,
    max_length: int | None,
    strategy: str,
    top_p: float,
    seed: int,
    backend: str | None,
) -> None:
    """Use a trained run's model on new texts (one JSON line each): labels and probabilities
    (classification), the top fills of each mask token (mlm, bert_pretraining), continuations (causal_lm)."""
    _predict(run_dir, input_file, texts, output, batch_size, top_k, (max_length, strategy, top_p, seed), backend)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--prompt", "prompts", multiple=True, required=True, help="A prompt to continue (repeatable).")
@click.option("--output", type=click.Path(dir_okay=False), help="JSONL file to write (default: stdout).")
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True, help="k of --strategy top_k.")
@_sampling_options
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (beats KERAS_BACKEND and the recipe).")
def generate(
    run_dir: str,
    prompts: tuple[str, ...],
    output: str | None,
    top_k: int,
    max_length: int | None,
    strategy: str,
    top_p: float,
    seed: int,
    backend: str | None,
) -> None:
    """Continue prompts with a causal-LM run (`predict --text` for causal_lm)."""
    _predict(run_dir, None, prompts, output, 32, top_k, (max_length, strategy, top_p, seed), backend, "causal_lm")


def _predict(run_dir, input_file, texts, output, batch_size, top_k, sampling, backend, only: str | None = None):
    from kerasboost.backend import resolve_backend, select_backend

    recipe = load_recipe(_run_recipe_file(run_dir))
    if only is not None and recipe.task != only:
        raise InputError(f"{run_dir}: a {recipe.task} run; generate continues causal_lm runs (use predict)")
    select_backend(resolve_backend(backend, recipe.backend))
    from kerasboost.predict import Sampling, predictions, read_inputs, write_jsonl
    from kerasboost.runner import load_trained

    inputs = read_inputs(texts, input_file, recipe.data)  # before the model loads: bad input fails fast

    max_length, strategy, top_p, seed = sampling
    chosen = Sampling(max_length or recipe.generate.max_length, strategy, top_k, top_p, seed)
    trained = load_trained(run_dir, with_data=False)  # the run directory alone: no corpus is read
    written = write_jsonl(predictions(trained, inputs, batch_size, top_k, chosen), output)
    if output is not None:
        click.echo(f"predictions: {written} -> {output}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "form",
    type=click.Choice(["preset", "base", "adapter", "peft", "transformers", "saved_model", "onnx"]),
    default="preset",
    show_default=True,
    help="preset: the trained model as a keras-hub preset (adapters merged in); base: the frozen base "
    "an adapter run trained on; adapter: our adapter files; peft: Hugging Face PEFT adapter files; "
    "transformers: the trained model as transformers' class for the task (AutoModelFor...from_pretrained); "
    "saved_model: a TensorFlow SavedModel for TF Serving (endpoint serve: token ids -> the task's logits); "
    "onnx: model.onnx for ONNX Runtime (same inputs and outputs, float32).",
)
@click.option("--out", type=click.Path(file_okay=False), help="Output directory (default RUN_DIR/export-FORMAT).")
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (beats KERAS_BACKEND and the recipe).")
def export(run_dir: str, form: str, out: str | None, backend: str | None) -> None:
    """Export a finished run's model from its newest checkpoint."""
    click.echo(f"exported: {_export(run_dir, form, out, backend)}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Output directory (default RUN_DIR/export-merged).")
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (beats KERAS_BACKEND and the recipe).")
def merge(run_dir: str, out: str | None, backend: str | None) -> None:
    """Write the preset of an adapter run: its adapters merged into the base (no LoRA layers in it)."""
    click.echo(f"merged preset: {_export(run_dir, 'merge', out, backend)}")


def _run_recipe_file(run_dir: str) -> Path:
    """The recipe.yaml of a run directory, or a one-line error saying `run_dir` is not one."""
    recipe_file = Path(run_dir) / "recipe.yaml"
    if not recipe_file.is_file():
        raise InputError(f"{run_dir}: not a run directory (no recipe.yaml)")
    return recipe_file


def _export(run_dir: str, form: str, out: str | None, backend: str | None) -> Path:
    from kerasboost.backend import resolve_backend, select_backend

    chosen = resolve_backend(backend, load_recipe(_run_recipe_file(run_dir)).backend)
    what = {"saved_model": "SavedModels", "onnx": "ONNX files (through tf2onnx)"}.get(form)
    if what and chosen != "tensorflow":
        raise InputError(
            f"--format {form}: Keras exports {what} of these models from the tensorflow backend, not "
            f"{chosen}; add --backend tensorflow (the run's checkpoints load on any backend)"
        )
    if form == "onnx" and not all(importlib.util.find_spec(name) for name in ("tf2onnx", "onnx")):
        raise InputError("--format onnx needs tf2onnx and onnx: pip install 'kerasboost[onnx]'")
    select_backend(chosen)
    from kerasboost.runner import export_run

    return export_run(run_dir, form, out)


@cli.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
def validate(recipes: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Check recipes against the schema and the files they name, without training."""
    failed = 0
    for path in recipes:
        try:
            loaded = load_recipe(path, overrides)
            check_files(loaded, source=path)
        except InputError as err:
            click.echo(f"error: {err}", err=True)
            failed += 1
            continue
        click.echo(f"ok: {path} (task {loaded.task}, {loaded.model.backbone})")
    if failed:
        sys.exit(2)


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
def show(recipe: str, overrides: tuple[str, ...]) -> None:
    """Print RECIPE fully resolved: base files merged, overrides applied, defaults filled in."""
    click.echo(load_recipe(recipe, overrides).to_yaml(), nl=False)


@cli.command("recipes")
@click.option(
    "--copy", "name", metavar="NAME", help="Write the bundled recipe NAME (and any it builds on) to DIRECTORY."
)
@click.argument("directory", required=False, type=click.Path(file_okay=False))
def list_recipes(name: str | None, directory: str | None) -> None:
    """List the bundled recipes with their descriptions; with --copy, write one to DIRECTORY (default .) to edit."""
    if name is None:
        if directory is not None:
            raise InputError(f"{directory}: a directory is only taken with --copy NAME")
        click.echo(f"bundled recipes ({BUNDLED_RECIPES}); `kerasboost run NAME.yaml` runs one by name")
        for path in sorted(BUNDLED_RECIPES.glob("*.yaml")):
            try:
                description = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("description", "")
            except yaml.YAMLError:
                description = "(unreadable)"
            click.echo(f"  {path.name:<28} {description}")
        return
    for written in copy_bundled_recipe(name, Path(directory or ".")):
        click.echo(f"wrote {written}")


def copy_bundled_recipe(name: str, directory: Path) -> list[Path]:
    """Copies the bundled recipe `name` and the `base:` recipes it builds on into `directory`; refuses to
    overwrite a file there (nothing is written then)."""
    source = find_recipe(name)
    if source.parent != BUNDLED_RECIPES or not source.is_file():
        names = ", ".join(path.stem for path in sorted(BUNDLED_RECIPES.glob("*.yaml")))
        raise InputError(f"--copy {name}: no bundled recipe of that name (bundled: {names})")
    chain = [source]
    while True:
        base = (yaml.safe_load(chain[-1].read_text(encoding="utf-8")) or {}).get("base")
        if not base:
            break
        chain.append(BUNDLED_RECIPES / base)
    targets = [directory / path.name for path in chain]
    existing = [target for target in targets if target.exists()]
    if existing:
        raise InputError(f"--copy {name}: {existing[0]} already exists; nothing was written")
    directory.mkdir(parents=True, exist_ok=True)
    for path, target in zip(chain, targets):
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return targets


def _set_args(overrides) -> list[str]:
    """`--set K=V` arguments that hand this command's overrides on to a child process."""
    return [arg for pair in overrides for arg in ("--set", pair)]


def check_distribution(recipe, backend: str, nproc: int) -> None:
    """What the `distribution:` section (and `--nproc`) can be refused for before any ML library loads."""
    check_strategy(recipe.distribution, backend)
    strategy = recipe.distribution.strategy
    if nproc > 1 and backend == "tensorflow":
        raise InputError(
            f"--nproc {nproc}: tensorflow runs one process per host (MirroredStrategy over its devices); "
            "use distribution.mesh.batch"
        )
    if nproc > 1 and strategy == "none":
        raise InputError(f"--nproc {nproc}: distribution.strategy is none; set distribution.strategy=data_parallel")
    if nproc > 1 and recipe.distribution.num_processes not in (None, nproc):
        raise InputError(
            f"--nproc {nproc}: the recipe's distribution.num_processes is {recipe.distribution.num_processes}"
        )


def main() -> None:
    """Console entry point: turns exceptions into the documented exit codes and one-line messages."""
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as err:
        hint = f" (see '{err.ctx.command_path} --help')" if err.ctx else ""
        click.echo(f"error: {err.format_message()}{hint}", err=True)
        sys.exit(2)
    except InputError as err:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except RunFailure as err:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as err:
        if debug:
            traceback.print_exc()
        where = f"{err.filename}: " if err.filename else ""
        hint = "" if debug else " (run with --debug for the traceback)"
        click.echo(f"error: {where}{err.strerror or err}{hint}", err=True)
        sys.exit(1)
    except Exception as err:  # noqa: BLE001  (any other failure is a runtime error: exit 1)
        if debug:
            traceback.print_exc()
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        click.echo(
            f"error: {type(err).__name__}: {message}" + ("" if debug else " (run with --debug for the traceback)"),
            err=True,
        )
        sys.exit(1)
