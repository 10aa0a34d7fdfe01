"""Every benchmark still starts as its docstring says (`.venv/bin/python bench/<name>.py`), from any folder: the
imports they need, the test servers included, resolve, and `--help` names its options. (Slow only because each
starts a Python that imports torch and Ray.)"""
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
