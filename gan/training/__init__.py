"""Training: the DCGAN pieces in pure torch -- models, losses, augmentation, EMA, the train state and one step,
checkpoints, the image schedule and the per-window step statistics. Reads shards; knows nothing of Ray Tune or MLflow."""
