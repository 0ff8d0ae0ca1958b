"""The data: from sources to the token files training reads (``trainer.tokenizer``, ``trainer.data``).

    sources.py         documents from one source, streamed: a hub dataset, local files, the offline corpus
    stdlib_corpus.py   the offline English corpus (docstrings and comments of the installed Python)
    mix.py             the data mix: sources interleaved by share, with a resumable sample stream
    spm_tokenizer.py   train the SentencePiece BPE tokenizer on a sample of the mix; load it
    encode_pool.py     tokenize chunks of documents in worker processes, in submission order
    memmaps.py         train.bin / val.bin (uint16 memmaps) and data_meta.json, written atomically
    prepared_files.py  reading back what the tokenizer and data steps prepared
    smoke_data.py      a small tokenizer and memmaps from the offline corpus, for smoke runs
    progress.py        the progress bars of these steps (tqdm on a terminal, plain lines in a file)
"""
