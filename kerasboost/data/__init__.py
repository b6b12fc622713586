"""Data: sources ► documents ► tokenizer ► task examples ► tf.data."""
