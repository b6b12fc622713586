"""Text generation from a causal LM: prompts in, continued texts out, through kerasboost's KV-cached decoder
(keras-hub's pre-LayerNorm `TransformerDecoder` stacks: GPT-2), written in `keras.ops` over a snapshot of the
model's weights.

Why not keras-hub's `CausalLM.generate`: every new token goes through Keras layer calls (on PyTorch the layer
machinery costs more than the matmuls at batch 8), all layers' caches are stacked into one tensor and sliced
apart again at every step (a full copy), the prompt is prefilled to the full output length, and the weights
are read in float32 under a mixed policy. Here the weights are read once: adapters folded in (LoRA, DoRA,
AdaLoRA), cast to the model's compute dtype, query/key/value fused into one matrix. Each layer keeps its own
cache, the prompt is prefilled to its shortest row, and the loop over new tokens is one compiled call
(`backend.compiled`). Sampling draws its uniforms up front with NumPy from the seed and inverts the
distribution's CDF, so the draws are the same on every backend and need no random state in the loop.

Rows are left-aligned: a row whose prompt is longer than the shortest keeps its own tokens (fed through the
loop) until its prompt ends, as in keras-hub.
"""

from __future__ import annotations

import math
from functools import partial

import keras
import keras_hub
import numpy as np
from keras import ops

from kerasboost.architectures import architecture_of
from kerasboost.architectures.spec import KERAS_HUB_BLOCK_NORMS, KERAS_HUB_PROJECTIONS, SELF_ATTENTION_ATTRIBUTE
from kerasboost.backend import compiled
from kerasboost.errors import InputError
from kerasboost.models.block_settings import feed_forward_activation, layer_norm_epsilon
from kerasboost.models.causal_lm import detokenize
from kerasboost.peft.inject import mergeable
from kerasboost.peft.lora import LoraLayer, float_kernel

STRATEGIES = ("greedy", "top_k", "top_p")
_ATTRIBUTE = {name: attribute for attribute, name in KERAS_HUB_PROJECTIONS.items()}
# Added to the scores of cache slots a token may not see (finite: -inf - -inf would be NaN in a row of them).
_HIDDEN = -1e9


def token_generator(backbone, strategy: str, top_k: int, top_p: float) -> Decoder | KerasHubGenerator:
    """What continues prompts: kerasboost's cached `Decoder`, or keras-hub's
    `CausalLM.generate` for a model the decoder cannot read (bottleneck adapters). Build it once and call it
    for every batch: it keeps its compiled functions."""
    if decodes(backbone):
        return Decoder(backbone, strategy, top_k, top_p)
    return KerasHubGenerator(backbone, strategy, top_k, top_p)


class KerasHubGenerator:
    """keras-hub's `CausalLM.generate` (its samplers, seeded, and its cache) behind `Decoder`'s call."""

    def __init__(self, backbone, strategy: str, top_k: int, top_p: float):
        self.max_positions = int(backbone.position_embedding.sequence_length)
        self._sampler = {
            "greedy": lambda seed: keras_hub.samplers.GreedySampler(),
            "top_k": lambda seed: keras_hub.samplers.TopKSampler(k=top_k, seed=seed),
            "top_p": lambda seed: keras_hub.samplers.TopPSampler(p=top_p, seed=seed),
        }[strategy]
        causal_lm_class = getattr(keras_hub.models, architecture_of(backbone).causal_lm_class)
        self._lm = causal_lm_class(backbone=backbone, preprocessor=None)

    def __call__(self, token_ids: np.ndarray, padding_mask: np.ndarray, seed: int = 0) -> np.ndarray:
        self._lm.compile(sampler=self._sampler(seed))
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
        return keras.ops.convert_to_numpy(self._lm.generate(inputs, stop_token_ids=None)["token_ids"])


def generate(
    generator: Decoder | KerasHubGenerator, tokenizer, prompts: list[str], max_length: int, seed: int
) -> list[tuple[str, int]]:
    """(text, number of tokens) for each prompt continued by `generator` (`token_generator`) to `max_length`
    tokens, prompt included (a longer prompt is cut to max_length - 1); generation does not stop early at
    <|endoftext|>. An empty prompt or a length past the model's positions is a one-line InputError."""
    token_ids = np.zeros((len(prompts), max_length), dtype="int32")
    padding_mask = np.zeros((len(prompts), max_length), dtype=bool)
    for row, ids in enumerate(tokenizer(prompts)):
        ids = np.asarray(ids)[: max_length - 1]
        if not len(ids):
            raise InputError(f"prompt {row + 1} is empty: give the model at least one token to continue")
        token_ids[row, : len(ids)] = ids
        padding_mask[row, : len(ids)] = True
    if max_length > generator.max_positions:
        raise InputError(f"max_length {max_length}: the model has {generator.max_positions} positions")
    return [(detokenize(tokenizer, ids), len(ids)) for ids in generator(token_ids, padding_mask, seed)]


def decodes(backbone) -> bool:
    """Whether `Decoder` can read `backbone`: keras-hub's pre-LN decoder blocks (with the attention and norms
    `architectures/spec.py` names), no bottleneck adapters (an activation between their projections cannot
    be folded into a weight)."""
    blocks = getattr(backbone, "transformer_layers", None)
    parts = (SELF_ATTENTION_ATTRIBUTE, *KERAS_HUB_BLOCK_NORMS.values())
    return (
        bool(blocks)
        and all(
            getattr(block, "normalize_first", False) and all(getattr(block, name, None) is not None for name in parts)
            for block in blocks
        )
        and mergeable(backbone)
    )


class Decoder:
    """Continues batches of left-aligned prompts with `backbone` (built once; compiled calls are reused
    across batches of the same shape).

    Args:
        backbone: keras-hub GPT-2 backbone (or any `decodes` accepts), adapters allowed.
        strategy: str, greedy | top_k | top_p.
        top_k: int, how many of the likeliest tokens top_k samples from.
        top_p: float, the probability mass top_p samples from.
    """

    def __init__(self, backbone, strategy: str = "greedy", top_k: int = 10, top_p: float = 0.9):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
        self.max_positions = int(backbone.position_embedding.sequence_length)
        self.weights = decoder_weights(backbone)
        settings = dict(
            heads=int(backbone.num_heads),
            epsilon=layer_norm_epsilon(backbone),
            activation=feed_forward_activation(backbone),
        )
        # Closures, not functools.partial: tf.function unwraps a partial's bound callables (dropping the
        # fused GELU's custom gradient wrapper).

        def prefill(weights, prompt, length):
            return _prefill(weights, prompt, length, **settings)

        def loop(weights, keys, values, logits, token_ids, padding_mask, uniforms, start):
            pick = partial(_next_token, strategy=strategy, top_k=top_k, top_p=top_p)
            return _loop(weights, keys, values, logits, token_ids, padding_mask, uniforms, start, pick=pick, **settings)

        self._prefill = compiled(prefill, static=("length",))
        self._loop = compiled(loop)

    def __call__(self, token_ids: np.ndarray, padding_mask: np.ndarray, seed: int = 0) -> np.ndarray:
        """`token_ids` (batch, length) with each row's prompt where `padding_mask` is true, from column 0 on:
        the same array with every position after each prompt filled by the model."""
        token_ids = np.asarray(token_ids, dtype="int32")
        padding_mask = np.asarray(padding_mask, dtype=bool)
        batch, length = token_ids.shape
        if length > self.max_positions:
            raise ValueError(f"{length} tokens: the model has {self.max_positions} positions")
        shortest = int(padding_mask.sum(axis=1).min())
        if shortest < 1:
            raise ValueError("every prompt needs at least one token")
        if shortest >= length:
            return token_ids
        uniforms = np.random.default_rng(seed).random((length, batch), dtype=np.float32)
        logits, keys, values = self._prefill(self.weights, token_ids[:, :shortest], length=length)
        filled = self._loop(self.weights, keys, values, logits, token_ids, padding_mask, uniforms, np.int32(shortest))
        return ops.convert_to_numpy(filled)


def decoder_weights(backbone) -> dict:
    """The backbone's weights as tensors in its compute dtype (layer norms in float32), adapters folded in,
    each block's query/key/value kernels fused into one (hidden, 3 x hidden) matrix."""
    dtype = backbone.compute_dtype

    def flat_kernel(layer, inputs: int):
        value = layer.merged_kernel() if isinstance(layer, LoraLayer) else float_kernel(layer)
        return ops.cast(ops.reshape(value, (math.prod(value.shape[:inputs]), -1)), dtype)

    def bias(layer):
        return ops.cast(ops.reshape(layer.bias, (-1,)), dtype)

    def norm(layer):
        return ops.cast(layer.gamma, "float32"), ops.cast(layer.beta, "float32")

    blocks = []
    for block in backbone.transformer_layers:
        attention = getattr(block, SELF_ATTENTION_ATTRIBUTE)
        qkv = [getattr(attention, _ATTRIBUTE[name]) for name in ("query", "key", "value")]
        output = getattr(attention, _ATTRIBUTE["attention_output"])
        blocks.append(
            {
                "attention_norm": norm(getattr(block, KERAS_HUB_BLOCK_NORMS["attention"])),
                "qkv": ops.concatenate([flat_kernel(layer, 1) for layer in qkv], axis=1),
                "qkv_bias": ops.concatenate([bias(layer) for layer in qkv], axis=0),
                "attention_output": flat_kernel(output, 2),
                "attention_output_bias": bias(output),
                "feedforward_norm": norm(getattr(block, KERAS_HUB_BLOCK_NORMS["feedforward"])),
                "intermediate": flat_kernel(getattr(block, _ATTRIBUTE["intermediate"]), 1),
                "intermediate_bias": bias(getattr(block, _ATTRIBUTE["intermediate"])),
                "output": flat_kernel(getattr(block, _ATTRIBUTE["output"]), 1),
                "output_bias": bias(getattr(block, _ATTRIBUTE["output"])),
            }
        )
    return {
        "token_embedding": ops.cast(backbone.token_embedding.embeddings, dtype),
        "position_embedding": ops.cast(backbone.position_embedding.position_embeddings, dtype),
        "final_norm": norm(backbone.layer_norm),
        "blocks": blocks,
    }


def _layer_norm(x, norm, epsilon: float):
    gamma, beta = norm
    x32 = ops.cast(x, "float32")
    mean = ops.mean(x32, axis=-1, keepdims=True)
    variance = ops.mean(ops.square(x32 - mean), axis=-1, keepdims=True)
    return ops.cast((x32 - mean) * ops.rsqrt(variance + epsilon) * gamma + beta, x.dtype)


def _forward(weights: dict, keys: list, values: list, token_ids, start, heads: int, epsilon: float, activation):
    """The final hidden states (batch, new, hidden) of `token_ids` (batch, new), which sit at positions
    start.. start + new, and the caches (batch, heads, length, head_dim) with their keys and values written in."""
    batch, new = token_ids.shape
    embedding = weights["token_embedding"]
    hidden = embedding.shape[1]
    size = hidden // heads
    length = keys[0].shape[2]
    positions = ops.slice(weights["position_embedding"], (start, 0), (new, hidden))
    x = ops.take(embedding, token_ids, axis=0) + positions[None]
    seen = ops.arange(length)[None, :] <= (start + ops.arange(new))[:, None]  # (new, length)
    new_keys, new_values = [], []
    for block, key_cache, value_cache in zip(weights["blocks"], keys, values):
        h = _layer_norm(x, block["attention_norm"], epsilon)
        qkv = ops.matmul(h, block["qkv"]) + block["qkv_bias"]
        qkv = ops.transpose(ops.reshape(qkv, (batch, new, 3, heads, size)), (2, 0, 3, 1, 4))
        query, key, value = qkv[0], qkv[1], qkv[2]
        key_cache = ops.slice_update(key_cache, (0, 0, start, 0), key)
        value_cache = ops.slice_update(value_cache, (0, 0, start, 0), value)
        scores = ops.einsum("bhqd,bhkd->bhqk", query, key_cache)
        scores = ops.cast(scores, "float32") / math.sqrt(size) + ops.where(seen, 0.0, _HIDDEN)
        attended = ops.einsum("bhqk,bhkd->bhqd", ops.cast(ops.softmax(scores, axis=-1), x.dtype), value_cache)
        attended = ops.reshape(ops.transpose(attended, (0, 2, 1, 3)), (batch, new, hidden))
        x = x + ops.matmul(attended, block["attention_output"]) + block["attention_output_bias"]
        h = _layer_norm(x, block["feedforward_norm"], epsilon)
        h = activation(ops.matmul(h, block["intermediate"]) + block["intermediate_bias"])
        x = x + ops.matmul(h, block["output"]) + block["output_bias"]
        new_keys.append(key_cache)
        new_values.append(value_cache)
    return _layer_norm(x, weights["final_norm"], epsilon), new_keys, new_values


def _logits(weights: dict, hidden):
    """Next-token logits (float32) from final hidden states: the token embedding as output projection."""
    return ops.cast(ops.matmul(hidden, ops.transpose(weights["token_embedding"])), "float32")


def _prefill(weights: dict, prompt, length: int, heads: int, epsilon: float, activation):
    """The prompt's columns shared by all rows through the model at once: the logits after the last one
    (batch, vocabulary) and caches for `length` positions."""
    batch = prompt.shape[0]
    hidden = weights["token_embedding"].shape[1]
    shape = (batch, heads, length, hidden // heads)
    empty = [ops.zeros(shape, weights["token_embedding"].dtype) for _ in weights["blocks"]]
    hidden, keys, values = _forward(weights, empty, list(empty), prompt, 0, heads, epsilon, activation)
    return _logits(weights, hidden[:, -1]), keys, values


def _loop(
    weights: dict, keys, values, logits, token_ids, padding_mask, uniforms, start, heads, epsilon, activation, pick
):
    """Fills columns start.. of `token_ids` one at a time: a prompt's own token where `padding_mask` holds
    it, else one picked from the logits; each placed token is then run through the model."""
    length = token_ids.shape[1]
    token_ids = ops.convert_to_tensor(token_ids)
    padding_mask = ops.convert_to_tensor(padding_mask)
    uniforms = ops.convert_to_tensor(uniforms)

    def place(index, token_ids, logits):
        chosen = ops.where(padding_mask[:, index], token_ids[:, index], pick(logits, uniforms[index]))
        return ops.slice_update(token_ids, (0, index), ops.cast(chosen, "int32")[:, None]), chosen

    def body(index, state):
        token_ids, keys, values, logits = state
        token_ids, chosen = place(index, token_ids, logits)
        hidden, keys, values = _forward(
            weights, keys, values, ops.cast(chosen, "int32")[:, None], index, heads, epsilon, activation
        )
        return token_ids, keys, values, _logits(weights, hidden[:, 0])

    state = ops.fori_loop(start, length - 1, body, (token_ids, list(keys), list(values), logits))
    token_ids, _, _, logits = state
    return place(length - 1, token_ids, logits)[0]


def _next_token(logits, uniform, strategy: str, top_k: int, top_p: float):
    """The token each row picks from its logits (batch, vocabulary): the likeliest (greedy), or a draw by
    inverting the CDF at `uniform` (batch,) over the `top_k` likeliest tokens or the smallest set holding
    `top_p` of the probability (nucleus)."""
    if strategy == "greedy":
        return ops.argmax(logits, axis=-1)
    k = top_k if strategy == "top_k" else logits.shape[-1]
    best, tokens = ops.top_k(logits, k)
    probabilities = ops.softmax(best, axis=-1)
    if strategy == "top_p":
        before = ops.cumsum(probabilities, axis=-1) - probabilities
        probabilities = ops.where(before < top_p, probabilities, 0.0)
    cdf = ops.cumsum(probabilities, axis=-1)
    threshold = uniform[:, None] * cdf[:, -1:]
    drawn = ops.minimum(ops.sum(ops.cast(cdf < threshold, "int32"), axis=-1), k - 1)
    return ops.take_along_axis(tokens, drawn[:, None], axis=-1)[:, 0]
