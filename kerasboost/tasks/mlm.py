"""task: mlm — masked-language modelling on packed sequences (RoBERTa-style, no NSP), on any encoder."""

from __future__ import annotations

from kerasboost.architectures import architecture
from kerasboost.data.mlm import masker, max_predictions, pack_sequences
from kerasboost.data.pipeline import Batches
from kerasboost.data.tokenizer import build_tokenizer, describe_tokenizer
from kerasboost.models.backbone import build_backbone
from kerasboost.models.mlm import build_mlm_model, mlm_loss_and_metrics
from kerasboost.tasks.task import Task, describe_data, packed_splits


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


def prepare(recipe, run, train_docs, validation_docs, report):
    data = recipe.data
    tokenizer = build_tokenizer(recipe.model, recipe.data, [doc.text for doc in train_docs], run)
    spec = architecture(recipe.model.backbone)
    start, end = (getattr(tokenizer, name) for name in spec.text_ends)
    examples = packed_splits(
        tokenizer,
        train_docs,
        validation_docs,
        data.sequence_length,
        lambda ids: pack_sequences(ids, data.sequence_length, start, end, tokenizer.pad_token_id),
    )
    backbone = build_backbone(recipe.model, tokenizer.vocabulary_size())
    loss, metrics = mlm_loss_and_metrics()
    summary = [
        describe_data(
            report,
            train_docs,
            validation_docs,
            len(examples["train"]["token_ids"]),
            len(examples["validation"]["token_ids"]),
            f"sequences of {data.sequence_length} tokens",
        ),
        describe_tokenizer(spec, tokenizer, run),
    ]
    batches = Batches(examples["train"], examples["validation"], mlm_masker(recipe, tokenizer), data.sequence_length)
    return Task(
        tokenizer,
        batches,
        backbone,
        build_mlm_model(backbone),
        loss,
        metrics,
        summary,
        logits_per_token=max_predictions(data) / data.sequence_length,
    )
