"""The job config: defaults, YAML, CLI overrides, and clear errors that name the field."""
import dataclasses

import pytest

from gan.config import ConfigError, ShardConfig, TrainConfig, parse


def test_defaults_parse_and_cli_overrides_with_dashes():
    config = parse(TrainConfig, ["--latent-dim", "64", "--lr", "1e-3", "--steps-per-epoch", "3", "--strict"])
    assert (config.latent_dim, config.lr, config.steps_per_epoch, config.strict) == (64, 1e-3, 3, True)
    assert config.batch_size == TrainConfig.batch_size


def test_yaml_fills_fields_and_cli_wins(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("epochs: 7\nlatent-dim: 32\nuse_gpu: true\n")
    config = parse(TrainConfig, ["--config", str(path), "--epochs", "9", "--no-use-gpu"])
    assert (config.epochs, config.latent_dim, config.use_gpu) == (9, 32, False)


@pytest.mark.parametrize("argv, flag", [
    (["--lr", "-1"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--latent-dim", "0"], "--latent-dim"),
    (["--resolution", "48"], "--resolution"),
    (["--num-workers", "0"], "--num-workers"),
    (["--batch-size", "abc"], "--batch-size"),
    (["--epochs", "2.5"], "--epochs"),
    (["--lr", "nan"], "--lr"),
    (["--ema-half-life-kimg", "-1"], "--ema-half-life-kimg"),
    (["--diffaugment", "translation,rotate"], "--diffaugment"),
    (["--kimg", "-5"], "--kimg"),
])
def test_bad_values_are_rejected_naming_the_field(argv, flag):
    with pytest.raises(ConfigError) as error:
        parse(TrainConfig, argv)
    assert str(error.value).startswith(flag)


def test_unknown_yaml_field_is_rejected_with_the_valid_names(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown field 'learning_rate'.*lr"):
        parse(TrainConfig, ["--config", str(path)])


def test_an_unknown_flag_is_named_with_the_nearest_real_one():
    with pytest.raises(ConfigError, match=r"unknown flag: --latnet-dim \(did you mean --latent-dim\?\)"):
        parse(TrainConfig, ["--latnet-dim", "5"])
    with pytest.raises(ConfigError, match="unknown flags: --learning-rate, --bogus .*; run with --help"):
        parse(TrainConfig, ["--learning-rate", "0.1", "--bogus=3"])


def test_resolved_makes_local_paths_absolute_and_names_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse(TrainConfig, ["--shards", "d", "--tracking-uri", "sqlite:///m.db"]).resolved()
    assert config.shards == str(tmp_path / "d")
    assert config.tracking_uri == f"sqlite:///{tmp_path / 'm.db'}"
    assert config.run_name.startswith("dcgan-")
    remote = dataclasses.replace(config, shards="s3://b/p", tracking_uri="http://127.0.0.1:5000").resolved()
    assert (remote.shards, remote.tracking_uri) == ("s3://b/p", "http://127.0.0.1:5000")


def test_tracking_uri_defaults_to_the_mlflow_environment_then_a_local_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5123")
    assert parse(TrainConfig, []).resolved().tracking_uri == "http://127.0.0.1:5123"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert parse(TrainConfig, []).resolved().tracking_uri == f"sqlite:///{tmp_path / 'mlruns.db'}"


def test_every_field_is_documented():
    for cls in (TrainConfig, ShardConfig):
        assert all(f.metadata.get("doc") for f in dataclasses.fields(cls)), cls


@pytest.mark.parametrize("job", ["train", "sweep", "make_shards"])
def test_every_job_prints_its_help_with_each_field_and_default(job):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", f"jobs.{job}", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--config" in result.stdout and "(default:" in result.stdout


def test_the_stabilisers_and_the_length_come_from_yaml_and_flags(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("ema-half-life-kimg: 2.5\ndiffaugment: translation\nkimg: 30\n")
    config = parse(TrainConfig, ["--config", str(path), "--diffaugment", "translation,cutout,color", "--epochs", "4"])
    assert (config.ema_half_life_kimg, config.diffaugment) == (2.5, "translation,cutout,color")
    assert config.length() == (4, 30.0)  # both bounds given: whichever comes first ends the run
    from gan.config import DEFAULT_KIMG
    assert parse(TrainConfig, []).length() == (0, DEFAULT_KIMG)  # neither given: the default length
    assert parse(TrainConfig, ["--epochs", "3"]).length() == (3, 0.0)  # epochs alone: no image bound sneaks in
