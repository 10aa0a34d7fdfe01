"""Tracking: MLflow runs logged from rank 0, the generator as a logged model and in the registry, and loading a
generator back by name to sample it."""
