"""The model and its way out (``trainer.model``, ``trainer.export``).

    transformer.py           the Llama-style decoder in one readable file; parameter and FLOP counts
    linear_cross_entropy.py  LM head + cross-entropy without the full float32 logits
    hf_convert.py            our state dict <-> Hugging Face's LlamaForCausalLM
    hf_tokenizer.py          a Hugging Face tokenizer that encodes exactly like our SentencePiece model
    hf_export.py             a checkpoint to a folder transformers loads, checked logit for logit
"""
