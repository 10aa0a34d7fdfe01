"""The quality metric is trustworthy: ~0 for real vs real, large for noise and mode collapse, falling as G learns."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from gan.metrics.classifier import ensure_reference, load_split
from gan.metrics.quality import (FLOOR_DRAWS, evaluate_generator, floor, frechet_distance, generate,
                                 kernel_inception_distance, measured_noise, measurement_draws, memorised_share,
                                 precision_recall, quality_of_features, quality_of_images)
from gan.shards.batches import normalise, plan_epoch, rank_batches
from gan.shards.manifest import read_manifest
from gan.shards.sources import stratified_choice
from gan.training.models import ModelShape, build_models
from gan.training.state import TrainState
from gan.training.step import train_step


@pytest.fixture(scope="module")
def reference(digits_shards):
    return ensure_reference(str(digits_shards), read_manifest(str(digits_shards)))[0]


@pytest.fixture(scope="module")
def holdout_quality(reference, digits_shards):
    images, _ = load_split(str(digits_shards), read_manifest(str(digits_shards)), "holdout")
    return quality_of_images(reference, images)


def test_frechet_distance_matches_closed_forms():
    mean = torch.tensor([1.0, -2.0, 0.5])
    cov_a, cov_b = torch.diag(torch.tensor([4.0, 1.0, 9.0])), torch.diag(torch.tensor([1.0, 1.0, 4.0]))
    assert frechet_distance(mean, cov_a, mean, cov_a) == pytest.approx(0.0, abs=1e-9)
    # Diagonal covariances: sum (sqrt(a) - sqrt(b))^2 = 1 + 0 + 1, plus the squared mean shift 3^2.
    assert frechet_distance(mean, cov_a, mean + torch.tensor([3.0, 0, 0]), cov_b) == pytest.approx(11.0)


def test_frechet_distance_survives_a_singular_covariance():
    features = torch.randn(5, 8, dtype=torch.float64)  # 5 samples in 8 dimensions: rank-deficient covariance
    cov = torch.cov(features.T)
    assert frechet_distance(features.mean(0), cov, features.mean(0), cov) == pytest.approx(0.0, abs=1e-6)


def test_precision_recall_of_identical_and_disjoint_sets():
    points = torch.randn(200, 4, dtype=torch.float64)
    assert precision_recall(points, points) == (1.0, 1.0)
    assert precision_recall(points, points + 100.0) == (0.0, 0.0)


def test_classifier_is_cached_per_shard_set_and_accurate(reference, digits_shards):
    again, built = ensure_reference(str(digits_shards), read_manifest(str(digits_shards)))
    assert not built and again.dataset_hash == reference.dataset_hash
    assert reference.test_accuracy > 0.9  # measured 0.97 on the 180 held-out digits


def test_a_reference_from_an_older_version_is_rebuilt_and_says_so(digits_shards, tmp_path, capsys):
    import io
    import shutil

    from gan.metrics.classifier import REFERENCE_FORMAT, reference_location

    shards = tmp_path / "shards"
    shutil.copytree(digits_shards, shards)
    manifest = read_manifest(str(shards))
    location = reference_location(str(shards), manifest)
    saved = torch.load(location, weights_only=True)
    buffer = io.BytesIO()  # what format 3 wrote: a floor taken from the holdout's first images, no labels to sample by
    torch.save({**{k: v for k, v in saved.items() if k != "holdout_labels"}, "format": 3}, buffer)
    (shards / manifest.reference_name).write_bytes(buffer.getvalue())
    rebuilt, built = ensure_reference(str(shards), manifest)
    assert built and len(rebuilt.holdout_labels) == len(rebuilt.holdout_features)
    assert f"has format 3, this code reads {REFERENCE_FORMAT}: building it again" in capsys.readouterr().err
    assert not ensure_reference(str(shards), manifest)[1]  # the rebuilt one is cached


def test_real_against_a_disjoint_real_split_is_near_zero(holdout_quality):
    # Measured here: fid_domain 14.4 for the 180 held-out digits (small-sample bias), against 1341 for noise and
    # 2987 for a collapsed generator; precision 0.90, recall 0.94.
    assert holdout_quality["quality/fid_domain"] < 30
    assert holdout_quality["quality/precision"] > 0.8 and holdout_quality["quality/recall"] > 0.8


def test_noise_is_far_from_the_real_images(reference, holdout_quality):
    noise = quality_of_images(reference, torch.rand(1000, 1, 32, 32) * 2 - 1)
    assert noise["quality/fid_domain"] > 20 * holdout_quality["quality/fid_domain"]
    assert noise["quality/precision"] < 0.05 and noise["quality/recall"] < 0.05


def test_mode_collapse_has_no_recall(reference, holdout_quality, digits_shards):
    one_digit = load_split(str(digits_shards), read_manifest(str(digits_shards)), "holdout")[0][:1]
    collapsed = quality_of_images(reference, one_digit.repeat(1000, 1, 1, 1))
    assert collapsed["quality/fid_domain"] > 20 * holdout_quality["quality/fid_domain"]
    assert collapsed["quality/recall"] < 0.01


@pytest.mark.slow
def test_fid_falls_as_the_generator_trains(reference, digits_shards):
    torch.manual_seed(0)
    manifest = read_manifest(str(digits_shards))
    state = TrainState.create(ModelShape(32, 1, latent_dim=64, g_features=32, d_features=32), 2e-4, 0.5, seed=0)
    measured = [evaluate_generator(state.generator, reference, 64, 500)["quality/fid_domain"]]
    for epoch in range(12):
        plan = plan_epoch(manifest.shards("train"), 1, 32, epoch, 0)
        for images, _ in rank_batches(str(digits_shards), plan, 0, manifest.image_spec, 500, epoch):
            train_step(state, normalise(images))
        if epoch in (2, 11):
            measured.append(evaluate_generator(state.generator, reference, 64, 500)["quality/fid_domain"])
    assert measured[0] > measured[1] > measured[2], measured


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_a_shift():
    torch.manual_seed(0)
    a, b = torch.randn(2000, 16), torch.randn(2000, 16)
    same, same_std = kernel_inception_distance(a, b, subsets=10, subset_size=500)
    shifted, _ = kernel_inception_distance(a, b + 0.5, subsets=10, subset_size=500)
    assert abs(same) < 3 * same_std + 1e-3  # unbiased: centred on 0, negative values allowed
    assert shifted > 20 * max(same_std, 1e-3)


def test_the_floor_is_measured_at_the_generated_sample_count(reference):
    at_100 = floor(reference, 100)
    assert at_100["quality/floor_samples"] == 100
    draws = [stratified_choice(reference.holdout_labels.numpy(), 100, np.random.default_rng([0, draw]))
             for draw in range(FLOOR_DRAWS)]
    assert at_100["quality/fid_domain_floor"] == pytest.approx(np.mean(
        [quality_of_features(reference, reference.holdout_features[chosen])["quality/fid_domain"] for chosen in draws]))
    chosen = draws[0]
    # A random sample with each class's share of the holdout: 100 of its 180 digits, each class rounded up or down.
    share = 100 * np.bincount(reference.holdout_labels.numpy(), minlength=10) / 180
    taken = np.bincount(reference.holdout_labels[chosen].numpy(), minlength=10)
    assert np.all((taken == np.floor(share)) | (taken == np.ceil(share))) and taken.sum() == 100
    # More than the holdout holds (180 digits): measured on all of it, and the count says so.
    assert floor(reference, 1000)["quality/floor_samples"] == len(reference.holdout_features) == 180


def test_a_measurement_averages_as_many_samples_of_generated_images_as_the_floor(reference):
    torch.manual_seed(0)
    generator, _ = build_models(ModelShape(32, 1, latent_dim=64, g_features=8, num_classes=10))
    measured = evaluate_generator(generator, reference, 64, 100, seed=3, conditional=True)
    noise, classes = measured_noise(reference, 64, 100, seed=3, conditional=True)
    assert len(noise) == len(classes) == 100 * FLOOR_DRAWS
    draws = [quality_of_images(reference, generate(generator, 64, 100, classes=c, noise=z))
             for z, c in zip(noise.split(100), classes.split(100))]
    assert len({round(draw["quality/fid_domain"], 9) for draw in draws}) == FLOOR_DRAWS  # five different samples
    for name in ("quality/fid_domain", "quality/precision", "quality/recall", "quality/kid"):
        assert measured[name] == pytest.approx(np.mean([draw[name] for draw in draws]), rel=1e-4), name
    # Each sample draws the holdout's class shares, and the first is what a single-sample measurement drew.
    share = 100 * np.bincount(reference.holdout_labels.numpy(), minlength=10) / len(reference.holdout_labels)
    for chunk in classes.split(100):
        taken = np.bincount(chunk.numpy(), minlength=10)
        assert np.all((taken == np.floor(share)) | (taken == np.ceil(share)))
    assert torch.equal(noise[:100], torch.randn(100, 64, generator=torch.Generator().manual_seed(3)))
    # Large measurements take fewer samples, down to one, so the images generated at once stay within memory.
    assert measurement_draws(1000) == FLOOR_DRAWS and measurement_draws(20_000) == 2 and measurement_draws(90_000) == 1


def test_a_class_sorted_holdout_gives_the_floor_of_a_shuffled_one_not_of_its_first_class(reference):
    order = torch.argsort(reference.holdout_labels, stable=True)  # the holdout a class folder used to write
    by_class = replace(reference, holdout_features=reference.holdout_features[order],
                       holdout_labels=reference.holdout_labels[order])
    shuffled_order = torch.randperm(len(order), generator=torch.Generator().manual_seed(1))
    shuffled = replace(reference, holdout_features=reference.holdout_features[shuffled_order],
                       holdout_labels=reference.holdout_labels[shuffled_order])
    sorted_floor = floor(by_class, 60)["quality/fid_domain_floor"]
    shuffled_floor = floor(shuffled, 60)["quality/fid_domain_floor"]
    assert shuffled_floor / 2 < sorted_floor < 2 * shuffled_floor
    # What a prefix in manifest order gave: the first 60 of a sorted holdout hold three classes, far off the data.
    prefix = quality_of_features(reference, by_class.holdout_features[:60])["quality/fid_domain"]
    assert prefix > 5 * sorted_floor


def test_memorised_share_flags_copies_of_training_images_and_not_new_ones(reference):
    train = reference.real_features
    assert memorised_share(train, train[:200] + 1e-6) == 1.0
    held_out = memorised_share(train, reference.holdout_features)
    assert held_out < 0.8  # real unseen digits are not copies (measured 0.53)
    assert memorised_share(train, train[:200] + 1e3) == 0.0


def test_a_holdout_shard_cut_at_a_member_boundary_stops_the_reference(digits_shards, tmp_path):
    import shutil
    import subprocess
    import sys
    import tarfile

    from gan.shards.reader import DataError

    shards = tmp_path / "shards"
    shutil.copytree(digits_shards, shards, ignore=shutil.ignore_patterns("quality-*.pt"))
    victim = shards / "holdout-000000.tar"
    with tarfile.open(victim) as tar:
        members = tar.getmembers()
    # A valid tar holding only the first half of the samples: cut at a member boundary, as a failed upload leaves it.
    cut = members[len(members) // 2]
    victim.write_bytes(victim.read_bytes()[:cut.offset] + b"\0" * 1024)
    manifest = read_manifest(str(shards))
    with pytest.raises(DataError, match="holdout-000000.tar"):
        ensure_reference(str(shards), manifest, strict=True)
    result = subprocess.run([sys.executable, "-m", "jobs.train", "--shards", str(shards), "--epochs", "1", "--strict"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "holdout-000000.tar" in result.stderr and "samples" in result.stderr
    assert "Started a local Ray instance" not in result.stdout + result.stderr
    # Without --strict, as for a training shard: skipped, counted and named. The partial reference is kept apart, so
    # the next run builds it again instead of measuring against half a holdout.
    reference, built = ensure_reference(str(shards), manifest, strict=False)
    assert built and len(reference.problems) == 1 and "holdout-000000.tar" in reference.problems[0]
    assert len(reference.holdout_features) == 180 - 50  # the cut shard kept 50 of its 100 samples
    assert not list(shards.glob(f"quality-{manifest.dataset_hash}.pt"))
    assert ensure_reference(str(shards), manifest, strict=False)[1]  # built again, not loaded
