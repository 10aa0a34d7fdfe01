"""One training run on Ray Train: the inputs checked before any cluster resource is taken, the Ray session,
the per-rank loop that wires batches -> step -> metrics -> tracking, and the TorchTrainer that runs it."""
