"""dcgan-ray: DCGAN training on Ray Train, streaming WebDataset shards, tracked in MLflow."""
