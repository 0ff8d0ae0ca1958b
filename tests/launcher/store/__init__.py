"""The stores (file and S3, against real S3 servers), their ledgers and probe, and fetch-checkpoint (launcher/store/)."""
