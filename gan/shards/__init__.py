"""Shards: image sources -> WebDataset shard files with a manifest -> the batches one rank reads (local or S3).

The lowest layer: it knows nothing of training, metrics or tracking."""
