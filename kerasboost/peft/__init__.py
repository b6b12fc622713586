"""Parameter-efficient fine-tuning: our LoRA / rsLoRA / DoRA layers, injection, merging, adapter files."""
