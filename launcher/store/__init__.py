"""Where runs live after the box is gone: one ``Store`` interface, two kinds.

    base.py       the interface, checkpoints verified by their manifests, transfers with progress
    file.py       ``file://DIR``: a plain folder (the embedded default)
    s3.py         ``s3://bucket/prefix`` on any S3-compatible endpoint (boto3)
    factory.py    the store a StorageConfig names (imports both kinds)
    retention.py  which stored checkpoints a run keeps (storage.keep, launcher prune)
    ledger.py     append-only ledgers: one object per record, never a read-modify-write
    probe.py      whether a store can hold a run (write, read back, delete a probe object)
"""
