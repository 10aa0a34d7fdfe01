"""Metrics: the domain classifier and what it measures -- FID/KID in its feature space, precision/recall, the
real-vs-real floor, memorisation. Reads shards; knows nothing of MLflow or Ray."""
