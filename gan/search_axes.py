"""The sweep's --search grammar: space-separated FIELD=SPEC axes, SPEC a value list (V1,V2,...) or a distribution
(loguniform(LOW,HIGH), uniform(LOW,HIGH)); every value and both ends of every range checked as the field's own flag
would check it. gan/sweep/tune.py turns the axes into Tune's param space."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from gan.config_fields import ConfigError, coerce, field_type, validate

LR_D_RATIO = "lr_d_ratio"  # a sweep-only axis: the trial's lr_d is lr x this (1 = one shared rate)
# lr spans the default (1.6e-3, chosen in docs/quality.md) by 8x below and 2.5x above, on a log scale
DEFAULT_SEARCH = "lr=loguniform(2e-4,4e-3) latent_dim=32,64,100,128"
RANDOM_SEARCH_TRIALS = 4  # the default --num-samples of a random search over DEFAULT_SEARCH
# Every trial's name, summary row and the parent's best.* tags show these, searched or not; other axes are extras.
TRIAL_SETTINGS = ("lr", "latent_dim", LR_D_RATIO)
# Training fields --search refuses, and why: every trial must share them for the comparison (and the sweep's
# bookkeeping) to hold.
UNSEARCHABLE: dict[str, str] = {
    "lr_d": "search lr_d_ratio, D's learning rate as a multiple of G's (e.g. lr_d_ratio=1,4)",
    **dict.fromkeys(("epochs", "kimg", "tick_kimg"), "every trial runs the same --epochs (and --kimg, --tick-kimg), "
                                                     "which ASHA and PBT schedule by"),
    **dict.fromkeys(("quality_every", "quality_samples"), "trials are ranked on quality/fid_domain, measured the same "
                                                           "way for all"),
    **dict.fromkeys(("shards", "resolution", "s3_endpoint_url", "tracking", "tracking_uri", "artifact_root",
                     "experiment", "run_name", "storage_path", "max_failures", "keep_models", "register",
                     "register_as", "min_workers", "num_workers", "elastic_resize_seconds"),
                    "it is the sweep's own setting, shared by every trial"),
}


@dataclass(frozen=True)
class Distribution:
    """A random-search axis: values drawn log-uniformly or uniformly between low and high."""
    kind: str  # "loguniform" or "uniform"
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.kind}({self.low:g},{self.high:g})"


def parse_search(text: str, train_config: type, grid: bool) -> dict[str, list | Distribution]:
    """--search as {field: values or a distribution}, in the order given; every value (and both ends of every
    range) typed and range-checked as its own flag would be. Raises ConfigError naming the axis at fault."""
    fields = {f.name: f for f in dataclasses.fields(train_config)}
    # Spaces inside a distribution's parentheses belong to it, not between axes.
    text = re.sub(r"\(([^)]*)\)", lambda m: "(" + m.group(1).replace(" ", "") + ")", text)
    axes: dict[str, list | Distribution] = {}
    for pair in text.split():
        name, _, spec = pair.partition("=")
        name = name.removeprefix("--").replace("-", "_")
        if not spec:
            raise ConfigError(f"--search {pair!r}: write FIELD=V1,V2 or FIELD=loguniform(LOW,HIGH), e.g. "
                              f"--search 'lr=loguniform(5e-5,1e-3) beta1=0.5,0.8'")
        if name in UNSEARCHABLE or name in axes:
            raise ConfigError(f"--search {name}: " + (UNSEARCHABLE[name] if name in UNSEARCHABLE else "given twice"))
        if name != LR_D_RATIO and name not in fields:
            allowed = ", ".join(sorted({*fields, LR_D_RATIO} - set(UNSEARCHABLE)))
            raise ConfigError(f"--search {name}: no such training field; searchable: {allowed}")
        axes[name] = _search_axis(name, spec, fields.get(name), train_config, grid)
    return axes


def _search_axis(name: str, spec: str, f: dataclasses.Field | None, train_config: type,
                 grid: bool) -> list | Distribution:
    """One --search axis, parsed and checked: a distribution (float fields, random search only) or a value list."""
    flag = f"--search {name}"
    drawn = re.fullmatch(r"(loguniform|uniform)\(([^,]+),([^,]+)\)", spec)
    if drawn:
        if grid:
            raise ConfigError(f"{flag}={spec}: --grid takes lists of values, not a distribution; e.g. "
                              f"{name}=1e-4,2e-4,5e-4, or drop --grid for random search")
        try:
            low, high = float(drawn.group(2)), float(drawn.group(3))
        except ValueError:
            raise ConfigError(f"{flag}={spec}: the bounds must be numbers, e.g. {drawn.group(1)}(5e-5,1e-3)") from None
        if f is not None and field_type(train_config, f) is not float:
            raise ConfigError(f"{flag}={spec}: a distribution draws floats, and {name} takes "
                              f"{field_type(train_config, f).__name__}s: list the values instead, e.g. {name}=32,64")
        if not low < high or (drawn.group(1) == "loguniform" and low <= 0):
            raise ConfigError(f"{flag}={spec}: LOW must be below HIGH" + (" and above 0 for loguniform"
                                                                          if drawn.group(1) == "loguniform" else ""))
        _check_search_value(name, low, f, train_config)
        _check_search_value(name, high, f, train_config)
        return Distribution(drawn.group(1), low, high)
    if re.fullmatch(r"\w+\(.*\)", spec):
        raise ConfigError(f"{flag}={spec}: unknown distribution; use loguniform(LOW,HIGH) or uniform(LOW,HIGH)")
    values = []
    for text in spec.split(","):
        if f is None:  # lr_d_ratio
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"{flag}: {text!r} is not a number") from None
        else:
            value = coerce(train_config, f, text, "--search")
        _check_search_value(name, value, f, train_config)
        values.append(value)
    return values


def _check_search_value(name: str, value: Any, f: dataclasses.Field | None, train_config: type) -> None:
    if f is None:
        if not 0 < value <= 100:
            raise ConfigError(f"--search {LR_D_RATIO}={value:g} is out of range: it must be > 0 and <= 100 "
                              f"(D's learning rate as a multiple of G's)")
        return
    try:
        validate(dataclasses.replace(train_config(), **{name: value}))
    except ConfigError as error:
        raise ConfigError(f"--search {name}: {error}") from None


