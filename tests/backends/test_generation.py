"""kerasboost's cached decoder (generation.py) against keras-hub's generate and the full model's logits,
on the backend under test."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import pytest

from kerasboost.errors import InputError
from kerasboost.generation import Decoder, KerasHubGenerator, generate, token_generator
from kerasboost.models.backbone import build_backbone
from kerasboost.models.causal_lm import build_causal_lm_model
from kerasboost.peft.inject import adapter_layers, apply_peft
from kerasboost.recipe import BottleneckConfig, ModelConfig, PeftConfig

CONFIG = dict(num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=48, dropout=0.0, max_sequence_length=24)
VOCAB = 97
LENGTH = 20
PROMPT_LENGTHS = (5, 8, 5)  # left-aligned and ragged: the longer row keeps its own tokens past the shortest


def gpt2(seed: int = 1):
    keras.utils.set_random_seed(seed)
    return build_backbone(ModelConfig(backbone="gpt2", config=CONFIG), VOCAB)


def prompts(length: int = LENGTH):
    ids = np.random.default_rng(0).integers(1, VOCAB, (len(PROMPT_LENGTHS), length)).astype("int32")
    mask = np.arange(length)[None, :] < np.array(PROMPT_LENGTHS)[:, None]
    return np.where(mask, ids, 0), mask


def next_token_logits(backbone, token_ids):
    """The full model's logits at every position (no cache): what each cached step must reproduce."""
    model = build_causal_lm_model(backbone)
    return keras.ops.convert_to_numpy(model({"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}))


def assert_prompts_kept(filled, token_ids, mask):
    np.testing.assert_array_equal(filled[mask], token_ids[mask])


def test_greedy_equals_keras_hub_generate():
    backbone = gpt2()
    token_ids, mask = prompts()
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy")
    expected = lm.generate({"token_ids": token_ids, "padding_mask": mask}, stop_token_ids=None)["token_ids"]
    filled = Decoder(backbone)(token_ids, mask)
    np.testing.assert_array_equal(filled, keras.ops.convert_to_numpy(expected))
    assert_prompts_kept(filled, token_ids, mask)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_greedy_follows_the_adapted_model(method):
    """Adapters (B randomised, so they change the outputs) are folded into the decoder's weights."""
    backbone = gpt2()
    apply_peft(backbone, PeftConfig(method=method, targets="all-linear"), seed=0)
    rng = np.random.default_rng(2)
    for layer in adapter_layers(backbone):
        layer.adapter_b.assign(rng.normal(0, 0.3, layer.adapter_b.shape).astype("float32"))
    token_ids, mask = prompts()
    filled = Decoder(backbone)(token_ids, mask)
    logits = next_token_logits(backbone, filled)
    generated = ~mask
    generated[:, 0] = False
    np.testing.assert_array_equal(filled[:, 1:][generated[:, 1:]], logits.argmax(-1)[:, :-1][generated[:, 1:]])
    assert_prompts_kept(filled, token_ids, mask)


@pytest.mark.parametrize("strategy", ["top_k", "top_p"])
def test_sampling_is_seeded_and_stays_in_the_allowed_set(strategy):
    backbone = gpt2()
    token_ids, mask = prompts()
    decoder = Decoder(backbone, strategy, top_k=3, top_p=0.5)
    filled = decoder(token_ids, mask, seed=7)
    np.testing.assert_array_equal(decoder(token_ids, mask, seed=7), filled)
    assert (decoder(token_ids, mask, seed=8) != filled).any()
    assert_prompts_kept(filled, token_ids, mask)
    logits = next_token_logits(backbone, filled)[:, :-1].astype("float64")
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    order = np.argsort(-probabilities, axis=-1)
    for row, column in zip(*np.nonzero(~mask[:, 1:])):
        rank = int(np.flatnonzero(order[row, column] == filled[row, column + 1])[0])
        if strategy == "top_k":
            assert rank < 3
        else:
            # The nucleus: every token before it in the order holds less than top_p in all (a little slack
            # for the decoder's own float32 rounding).
            assert probabilities[row, column, order[row, column, :rank]].sum() < 0.5 + 1e-4


def test_mixed_bfloat16_decodes_with_bfloat16_weights():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        backbone = gpt2()
    finally:
        keras.config.set_dtype_policy("float32")
    decoder = Decoder(backbone)
    assert keras.backend.standardize_dtype(decoder.weights["blocks"][0]["qkv"].dtype) == "bfloat16"
    token_ids, mask = prompts()
    filled = decoder(token_ids, mask)
    assert ((filled >= 0) & (filled < VOCAB)).all()
    np.testing.assert_array_equal(decoder(token_ids, mask), filled)


class Tokenizer:
    """Stands in for a keras-hub tokenizer: ids are the words' numbers."""

    def __call__(self, texts):
        return [[int(word) for word in text.split()] for text in texts]

    def detokenize(self, ids):
        return " ".join(str(int(i)) for i in ids)


def test_generate_continues_texts_to_max_length():
    generator = token_generator(gpt2(), "greedy", 1, 1.0)
    outputs = generate(generator, Tokenizer(), ["5 6 7", "8 9 10 11 12 13 14 15 16 17"], 8, seed=0)
    assert [tokens for _, tokens in outputs] == [8, 8]
    assert outputs[0][0].startswith("5 6 7 ")
    assert outputs[1][0].startswith("8 9 10 11 12 13 14 ")  # cut to max_length - 1, then one new token


@pytest.mark.parametrize(
    "prompt, max_length, message",
    [("", 8, "prompt 1 is empty"), ("5 6", CONFIG["max_sequence_length"] + 1, "the model has 24 positions")],
)
def test_bad_generation_requests_are_one_line_errors(prompt, max_length, message):
    generator = token_generator(gpt2(), "greedy", 1, 1.0)
    with pytest.raises(InputError, match=message):
        generate(generator, Tokenizer(), [prompt], max_length, seed=0)


def test_bottleneck_adapters_generate_through_keras_hub():
    backbone = gpt2()
    apply_peft(backbone, PeftConfig(method="bottleneck", bottleneck=BottleneckConfig(placement="houlsby")), seed=0)
    generator = token_generator(backbone, "greedy", 1, 1.0)
    assert isinstance(generator, KerasHubGenerator)
    token_ids, mask = prompts()
    filled = generator(token_ids, mask, 0)
    assert filled.shape == token_ids.shape
    assert_prompts_kept(filled, token_ids, mask)
