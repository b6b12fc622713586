"""GPT-2 (keras-hub `GPT2Backbone`, byte-level BPE): a decoder without segment ids.

Hugging Face's GPT-2 fuses query, key and value into one Conv1D `c_attn` (weights stored (in, out)).
"""

from kerasboost.architectures.spec import Architecture, HuggingFaceNames

_MODULES = {
    "query": "attn.c_attn",
    "key": "attn.c_attn",
    "value": "attn.c_attn",
    "attention_output": "attn.c_proj",
    "intermediate": "mlp.c_fc",
    "output": "mlp.c_proj",
}

ARCHITECTURE = Architecture(
    name="gpt2",
    title="GPT-2",
    backbone_class="GPT2Backbone",
    tokenizer_class="GPT2Tokenizer",
    vocabulary="byte_bpe",
    tasks=("causal_lm", "classification"),
    segments=False,
    classifier_pooling="last_token",
    text_ends=(None, "end_token_id"),
    hugging_face=HuggingFaceNames(
        module=lambda block, name: f"h.{block}.{_MODULES[name]}",
        base_model="transformer",
        export_prefix="transformer.",
        fused=("query", "key", "value"),
        fan_in_fan_out=True,
    ),
    causal_lm_class="GPT2CausalLM",
    # keras-hub's GPT-2 tokenizer treats id 0 as padding: a padding token takes it, <|endoftext|> id 1.
    special_tokens=("<|pad|>", "<|endoftext|>"),
)
