"""The tokenizer and data steps, local files and the hub (trainer/corpus/)."""
