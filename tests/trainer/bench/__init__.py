"""The throughput benchmark, the cost gate, the NCCL probe and the bench harness (trainer/bench/)."""
