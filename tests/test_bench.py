"""Every benchmark still starts as its docstring says (`.venv/bin/python bench/<name>.py`), from any folder: the
imports they need, the test servers included, resolve, and `--help` names its options. (Slow only because each
starts a Python that imports torch and Ray.)"""
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO, clean_env

BENCHMARKS = sorted(path.name for path in (REPO / "bench").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS)
def test_the_benchmark_starts_and_prints_its_options(script, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "bench" / script), "--help"], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


@pytest.mark.slow
def test_quality_curves_draws_every_setting_with_a_history_and_refuses_results_without_one(tmp_path):
    from PIL import Image

    def point(kimg: float, fid: float) -> dict:
        return {"kimg": kimg, "minutes": kimg / 20, "quality/fid_domain": fid, "quality/fid_domain_floor": 1.6,
                "quality/precision": 0.7, "quality/recall": 0.8}

    rows = [{"setting": "ema", "history": [point(10, 900.0), point(60, 120.0), point(120, 40.0)]},
            {"setting": "ttur", "history": [point(10, 1500.0), point(120, 260.0)]}]
    (tmp_path / "with.json").write_text(json.dumps({"rows": rows}))
    (tmp_path / "without.json").write_text(json.dumps({"rows": [{"setting": "ema"}]}))
    script = [sys.executable, str(REPO / "bench" / "quality_curves.py")]
    drawn = subprocess.run([*script, "with.json", "--out", "curves.png"], cwd=tmp_path, env=clean_env(),
                           capture_output=True, text=True, timeout=120)
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    assert "2 curves" in drawn.stdout and Image.open(tmp_path / "curves.png").size[0] > 1000
    refused = subprocess.run([*script, "without.json"], cwd=tmp_path, env=clean_env(), capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0 and "no row with a measurement history" in refused.stderr
