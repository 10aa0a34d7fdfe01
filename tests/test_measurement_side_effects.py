"""A quality measurement must not change training: scoring both generators (their samples, the reference's
classifier, the metrics), the grid, the export and the upload through the logger thread leave the global RNG and the
following steps exactly as they were. Rank 0 alone measures, so any RNG it draws there made how often a run measured
change what it trained (docs/quality.md, "Run-to-run variation")."""
import mlflow
import pytest
import torch

from gan.metrics.classifier import FEATURE_DIM, DomainClassifier, QualityReference
from gan.metrics.feature_tasks import CLASSIFIER
from gan.metrics.quality import evaluate_generator, generate
from gan.tracking.runs import RunLogger
from gan.training.images import sample_grid
from gan.training.models import ModelShape
from gan.training.state import TrainState
from gan.training.step import train_step

SHAPE = ModelShape(32, 1, latent_dim=16, g_features=8, d_features=8)


def _steps_around(action) -> tuple[bool, torch.Tensor]:
    """Three steps, `action`, three more: whether the RNG came through untouched, and the last three steps' stats
    (computed from the RNG state before the action, so only non-RNG effects can show in them)."""
    state = TrainState.create(SHAPE, 8e-4, 0.5, seed=0, ema_half_life_kimg=1.0, images_per_step=16)
    real = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    torch.manual_seed(1)
    for _ in range(3):
        train_step(state, real)
    before = torch.get_rng_state().clone()
    action(state)
    untouched = torch.equal(before, torch.get_rng_state())
    torch.set_rng_state(before)
    return untouched, torch.stack([train_step(state, real) for _ in range(3)])


def _reference() -> QualityReference:
    """A reference with a (random) classifier of the real shape: what a measurement builds and runs each time."""
    seeded = torch.Generator().manual_seed(3)
    with torch.random.fork_rng():
        torch.manual_seed(4)
        weights = DomainClassifier(1, 10).state_dict()
    real = torch.randn(300, FEATURE_DIM, generator=seeded, dtype=torch.float64)
    return QualityReference("test", 1, 10, CLASSIFIER, weights, 0.9, real.mean(0), torch.cov(real.T), real,
                            real[:100], torch.arange(100) % 10, 0.0, 300, False)


@pytest.fixture
def tracker(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    experiment = mlflow.MlflowClient(uri).create_experiment("side-effects", artifact_location=str(tmp_path / "art"))
    logger = RunLogger(uri, mlflow.MlflowClient(uri).create_run(experiment).info.run_id, active=True)
    yield logger
    logger.close()


def test_a_measurement_leaves_the_rng_and_the_next_steps_exactly_as_they_were(tracker):
    reference = _reference()

    def measure(state: TrainState) -> None:
        generate(state.generator, SHAPE.latent_dim, 100)
        for generator in (state.generator, state.sampler):  # what worker._QualityJudge.measure runs on rank 0
            evaluate_generator(generator, reference, SHAPE.latent_dim, 100, memorisation=True)
        tracker.log_image(sample_grid(state.sampler, state.fixed_noise), "samples", step=state.step)
        tracker.log_generator(state.generator, SHAPE, state.step, {"generator": "raw"}, {"quality/fid_domain": 1.0})
        assert tracker.flush(timeout=120) and tracker.failed_calls == 0  # the model really went through

    _, undisturbed = _steps_around(lambda state: None)
    untouched, measured = _steps_around(measure)
    assert untouched and torch.equal(measured, undisturbed)
