"""Sweeps: Ray Tune over a function trainable that builds one TorchTrainer per trial, the MLflow parent run, and
the sweep's report (table and plot)."""
