"""task: causal_lm — GPT-2 next-token prediction on packed documents, then sample generations."""

from __future__ import annotations

import json

from kerasboost.architectures import architecture
from kerasboost.data.causal import next_token_transform
from kerasboost.data.prepare import PreparedData
from kerasboost.data.tokenizer import describe_tokenizer
from kerasboost.generation import generate, token_generator
from kerasboost.models.backbone import build_backbone
from kerasboost.models.causal_lm import build_causal_lm_model
from kerasboost.models.mlm import mlm_loss_and_metrics
from kerasboost.tasks.task import Task, batches


def build_model(recipe, vocabulary_size: int, labels: list[str] | None = None):
    """The GPT-2 backbone and the causal-LM model on it."""
    backbone = build_backbone(recipe.model, vocabulary_size)
    return backbone, build_causal_lm_model(backbone)


def prepare(recipe, run, data: PreparedData):
    tokenizer = data.tokenizer
    backbone, model = build_model(recipe, tokenizer.vocabulary_size())
    loss, metrics = mlm_loss_and_metrics()
    summary = [
        data.describe(f"packed sequences of {recipe.data.sequence_length} tokens"),
        describe_tokenizer(architecture(recipe.model.backbone), tokenizer, run),
    ]

    def after_training(log, step):
        settings = recipe.generate
        if not settings.prompts:
            return
        print("generations:", flush=True)
        with run.generations_file.open("a", encoding="utf-8") as handle:
            for strategy in settings.strategies:
                generator = token_generator(backbone, strategy, settings.top_k, settings.top_p)
                outputs = generate(generator, tokenizer, settings.prompts, settings.max_length, settings.seed)
                for prompt, (text, tokens) in zip(settings.prompts, outputs):
                    print(f"  [{strategy}] {text!r}", flush=True)
                    record = {"step": step, "strategy": strategy, "prompt": prompt, "text": text, "tokens": tokens}
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                log.text(
                    f"generation/{strategy}",
                    step,
                    "\n\n".join(f"**{p}** → {t}" for p, (t, _) in zip(settings.prompts, outputs)),
                )

    return Task(
        tokenizer,
        batches(data, next_token_transform, recipe.data.sequence_length),
        backbone,
        model,
        loss,
        metrics,
        summary,
        after_training=after_training,
        logits_per_token=1.0,
    )
