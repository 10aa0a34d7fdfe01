"""Class-conditional generation (--conditional): G reads a class embedding, D adds the projection term of Miyato &
Koyama (2018); a run logs one grid row per class and a class-match metric with its floor; the logged model takes z
and a class and samples a class where `gan` cannot be imported."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from gan.config import CONDITIONAL_MODE_SEEKING, SampleConfig, TrainConfig, parse
from gan.config_fields import ConfigError
from gan.run.preflight import check_inputs
from gan.tracking.sampling import Sampler, sample_picture
from gan.training.images import GRID_COLUMNS, sample_grid
from gan.training.models import Discriminator, Generator, ModelShape, PackedClassInput, build_models
from gan.training.state import TrainState
from gan.training.step import train_step
from jobs import make_shards, train
from tests.helpers import REPO, clean_env, export_digits, logged_models, metric_values

SHAPE = ModelShape(32, 1, latent_dim=16, g_features=8, d_features=8, num_classes=10)


@pytest.mark.parametrize("resolution, channels", [(32, 1), (64, 3)])
def test_conditional_networks_take_a_class_per_image(resolution, channels):
    shape = ModelShape(resolution, channels, 16, 8, 8, num_classes=10)
    generator, discriminator = build_models(shape)
    z, classes = torch.randn(5, 16), torch.tensor([0, 3, 9, 3, 1])
    images = generator(z, classes)
    assert images.shape == (5, channels, resolution, resolution)
    assert discriminator(images, classes).shape == (5,)
    generator.eval()
    same_z = generator(z[:1].repeat(2, 1), torch.tensor([2, 7]))
    assert not torch.allclose(same_z[0], same_z[1])  # the class, not only z, shapes the image


def test_the_projection_term_is_the_class_embedding_times_the_pooled_features():
    torch.manual_seed(0)
    discriminator = Discriminator(SHAPE).eval()
    images, classes = torch.randn(4, 1, 32, 32), torch.tensor([1, 4, 4, 8])
    features = discriminator.net[:-1](images).sum((2, 3))
    unconditional = discriminator.net(images).flatten()
    expected = unconditional + (discriminator.embed(classes) * features).sum(1)
    assert torch.allclose(discriminator(images, classes), expected, atol=1e-5)
    # Two classes differ by exactly the difference of their embeddings' projections.
    other = torch.tensor([2, 2, 2, 2])
    difference = discriminator(images, classes) - discriminator(images, other)
    assert torch.allclose(difference, ((discriminator.embed(classes) - discriminator.embed(other)) * features).sum(1),
                          atol=1e-5)


def test_unconditional_networks_keep_their_parameters_so_old_checkpoints_load():
    shape = ModelShape(32, 1, 16, 8, 8)
    generator, discriminator = build_models(shape)
    assert not any("embed" in name for name in [*generator.state_dict(), *discriminator.state_dict()])
    assert generator.net[0].in_channels == 16


def test_the_class_embedding_is_one_channel_per_class_and_never_outweighs_z():
    assert ModelShape(32, 1, latent_dim=100, num_classes=10).class_embedding == 10  # MNIST: z has 100
    assert ModelShape(32, 1, latent_dim=16, num_classes=10).class_embedding == 8  # at most half of z
    assert Generator(SHAPE).net[0].in_channels == 16 + 8


def test_a_conditional_step_trains_both_embeddings_and_the_ema_sampler_draws_rows_per_class():
    state = TrainState.create(SHAPE, 2e-4, 0.5, seed=0, ema_half_life_kimg=1.0)
    before = [state.generator.embed.weight.clone(), state.discriminator.embed.weight.clone()]
    stats = train_step(state, torch.rand(16, 1, 32, 32) * 2 - 1, classes=torch.arange(16) % 10)
    assert torch.isfinite(stats).all()
    assert not torch.equal(before[0], state.generator.embed.weight)
    assert not torch.equal(before[1], state.discriminator.embed.weight)
    grid = sample_grid(state.sampler, state.fixed_noise)  # the EMA copy, BatchNorm statistics per class mix
    assert grid.shape == (10 * 34 + 2, GRID_COLUMNS * 34 + 2)  # a row of 8 per class, 32 px + 2 px padding


def test_sampling_checks_the_class_against_the_generator():
    conditional = Sampler(PackedClassInput(Generator(SHAPE).eval()), 16, "test", num_classes=10)
    assert sample_picture(conditional, 8, seed=0, class_index=3).shape == (34 + 2, 8 * 34 + 2)
    assert sample_picture(conditional, 64, seed=0).shape == (10 * 34 + 2, 8 * 34 + 2)  # a row per class
    with pytest.raises(ValueError, match="draws classes 0..9"):
        sample_picture(conditional, 8, seed=0, class_index=10)
    plain = Sampler(Generator(ModelShape(32, 1, 16, 8, 8)).eval(), 16, "plain")
    with pytest.raises(ValueError, match="not class-conditional"):
        sample_picture(plain, 8, seed=0, class_index=1)
    assert parse(SampleConfig, ["--model", "m", "--class", "7"]).class_ == 7


def test_conditional_training_on_unlabelled_shards_is_refused_before_ray_starts(tmp_path):
    export_digits(tmp_path / "scans", layout="flat")
    assert make_shards.main(["--from-folder", str(tmp_path / "scans"), "--out", str(tmp_path / "shards")]) == 0
    with pytest.raises(ConfigError, match="--conditional needs labelled shards"):
        check_inputs(TrainConfig(shards=str(tmp_path / "shards"), conditional=True, tracking=False))


def test_unset_conditional_means_conditional_on_labelled_shards_and_unconditional_on_unlabelled(tmp_path):
    for layout in ("flat", "classes"):
        export_digits(tmp_path / layout, layout=layout)
        out = str(tmp_path / f"{layout}-shards")
        assert make_shards.main(["--from-folder", str(tmp_path / layout), "--out", out]) == 0
    labelled, unlabelled = str(tmp_path / "classes-shards"), str(tmp_path / "flat-shards")
    default = parse(TrainConfig, ["--no-tracking"])
    assert default.conditional is None  # auto
    # What the run records as its `conditional` param (the flag's own value is unset).
    assert check_inputs(TrainConfig(shards=labelled, tracking=False))[1]["conditional"] == "True"
    assert check_inputs(TrainConfig(shards=unlabelled, tracking=False))[1]["conditional"] == "False"
    assert check_inputs(TrainConfig(shards=labelled, conditional=False, tracking=False))[1]["conditional"] == "False"
    # Mode seeking, unset, follows the mode; given, it holds in either.
    auto = check_inputs(TrainConfig(shards=labelled, tracking=False))[1]["mode_seeking"]
    assert auto == str(CONDITIONAL_MODE_SEEKING) and CONDITIONAL_MODE_SEEKING > 0
    assert check_inputs(TrainConfig(shards=unlabelled, tracking=False))[1]["mode_seeking"] == "0.0"
    assert check_inputs(TrainConfig(shards=unlabelled, mode_seeking=1.0, tracking=False))[1]["mode_seeking"] == "1.0"
    assert [default.is_conditional(classes) for classes in (0, 1, 2, 10)] == [False, False, True, True]
    assert not parse(TrainConfig, ["--no-conditional"]).is_conditional(10)
    assert parse(TrainConfig, ["--conditional"]).conditional is True
    written = tmp_path / "auto.yaml"  # a best-config YAML (the sweep's) writes the unset value back as null
    written.write_text("conditional: null\n")
    assert parse(TrainConfig, ["--config", str(written)]).conditional is None
    written.write_text("conditional: auto\n")
    assert parse(TrainConfig, ["--config", str(written)]).conditional is None


SMALL_RUN = ["--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "16", "--g-features", "8", "--d-features", "8",
             "--latent-dim", "16", "--quality-samples", "200", "--conditional"]
# Loads the logged model as a user with only mlflow and torch would: `gan` cannot be imported.
WITHOUT_GAN = """
import sys
sys.modules["gan"] = None
import mlflow, numpy as np, torch
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pytorch.load_model(sys.argv[2])
z = torch.randn(1, 16).repeat(2, 1)
images = model(torch.cat([z, torch.tensor([[3.0], [8.0]])], 1))
served = mlflow.pyfunc.load_model(sys.argv[2]).predict(np.concatenate([z.numpy(), [[3.0], [8.0]]], 1).astype("f4"))
assert np.allclose(served, images.numpy(), atol=1e-5)
print(tuple(images.shape), float((images[0] - images[1]).abs().mean()))
"""


@pytest.mark.slow
def test_a_conditional_run_logs_class_rows_and_class_match_and_its_model_samples_a_class_without_gan(
        digits_shards, local_ray, tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert train.main(["--shards", str(digits_shards), *SMALL_RUN, "--tracking-uri", tracking, "--artifact-root",
                       str(tmp_path / "mlartifacts"), "--storage-path", str(tmp_path / "ray")]) == 0
    client = MlflowClient(tracking)
    (run,) = client.search_runs([client.get_experiment_by_name("dcgan").experiment_id])
    assert len(metric_values(client, run.info.run_id, "quality/class_match")) == 2
    assert 0.5 < run.data.metrics["quality/class_match_floor"] <= 1  # the classifier on real held-out digits
    grids = sorted((tmp_path / "mlartifacts").rglob("samples*.png"))
    assert grids and Image.open(grids[-1]).size[1] == 10 * 34 + 2  # one row per digit
    model = logged_models(tracking, run.info.run_id)[0]
    assert model.tags["conditional"] == "true"
    uri = f"models:/{model.model_id}"
    result = subprocess.run([sys.executable, "-c", WITHOUT_GAN, tracking, uri], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env=clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    shape, difference = result.stdout.split(") ")
    assert shape + ")" == "(2, 1, 32, 32)" and float(difference) > 0  # one z, two classes, two images
    out = tmp_path / "sevens.png"
    result = subprocess.run([sys.executable, "-m", "jobs.sample", "--model", uri, "--tracking-uri", tracking,
                             "--class", "7", "--num-images", "16", "--out", str(out)], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env=clean_env())
    assert result.returncode == 0 and "of class 7" in result.stdout, result.stderr[-2000:]
    assert np.asarray(Image.open(out)).shape == (2 * 34 + 2, 8 * 34 + 2)
