"""task: mlm — masked-language modelling on packed sequences (RoBERTa-style, no NSP), on any encoder."""

from __future__ import annotations

from kerasboost.architectures import architecture
from kerasboost.data.mlm import masker, max_predictions
from kerasboost.data.prepare import PreparedData
from kerasboost.data.tokenizer import describe_tokenizer
from kerasboost.models.backbone import build_backbone
from kerasboost.models.mlm import build_mlm_model, mlm_loss_and_metrics
from kerasboost.tasks.task import Task, batches


def mlm_masker(recipe, tokenizer):
    data = recipe.data
    return masker(
        tokenizer.vocabulary_size(),
        tokenizer.mask_token_id,
        tokenizer.pad_token_id,
        tokenizer.special_token_ids,
        data.mask_rate,
        max_predictions(data),
        segments=architecture(recipe.model.backbone).segments,
    )


def build_model(recipe, vocabulary_size: int, labels: list[str] | None = None):
    """The backbone and the masked-LM model on it."""
    backbone = build_backbone(recipe.model, vocabulary_size)
    return backbone, build_mlm_model(backbone)


def prepare(recipe, run, data: PreparedData):
    tokenizer = data.tokenizer
    spec = architecture(recipe.model.backbone)
    backbone, model = build_model(recipe, tokenizer.vocabulary_size())
    loss, metrics = mlm_loss_and_metrics(recipe.train.label_smoothing)
    length = recipe.data.sequence_length
    summary = [data.describe(f"sequences of {length} tokens"), describe_tokenizer(spec, tokenizer, run)]
    return Task(
        tokenizer,
        batches(data, mlm_masker(recipe, tokenizer), length),
        backbone,
        model,
        loss,
        metrics,
        summary,
        logits_per_token=max_predictions(recipe.data) / length,
    )
