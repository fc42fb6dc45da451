"""The search space, read from Hydra's override grammar as upstream's Optuna sweeper documents it:

- a comma list or `choice(...)`: categorical, each value keeping its type (`choice(1, 2)` gives the
  ints 1 and 2, `true,false` booleans, `relu,tanh` strings; config groups too);
- `range(start, stop, step)`: a stepped int range, or a float one when any bound or the step is a
  float, from `start` to `stop` included, as upstream reads it; `shuffle(range(...))` makes
  categories of Hydra's range() (`stop` excluded), as upstream does;
- `interval(a, b)`: a float range; `int(interval(a, b))`: an int range; `tag(log, ...)`: log scale;
- a plain value: passed to every trial as it is.

The deprecated `hydra.sweeper.search_space` mapping (Hydra 1.1's form) is read too. A trial's
overrides carry its sampled values exactly as the study records them (floats in full).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, QuotedString, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException, ValidationError
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from optuna_pruning_sweeper.compat import value_text
from optuna_pruning_sweeper.errors import SweeperError
from optuna_pruning_sweeper.names import SPACE_CUSTOM, SPACE_FIXED, SPACE_PARAMS, SPACE_STRUCTURED, key_of

GRAMMAR = (
    "a comma list or choice(...) for categories, range(start, stop, step) for a stepped range, "
    "interval(a, b) for a float range, int(interval(a, b)) for an integer one, tag(log, ...) for a log scale"
)


@dataclass(frozen=True)
class Space:
    distributions: dict[str, BaseDistribution]  # by the override's key, e.g. "optimizer.lr", "activation", "+w"
    fixed: list[str]  # overrides passed to every trial as they are
    custom: str | None = None  # hydra.sweeper.custom_search_space: adds parameters to each trial
    # Fixed keys a resumed search may change: `resume` and the keys the app keeps out of its run
    # directories' names (hydra.job.config.override_dirname.exclude_keys: where or how fast a
    # run goes, never what it computes).
    neutral: frozenset[str] = frozenset({"resume"})
    # Keys whose categories are lists or dicts: Optuna's are numbers, strings, booleans or null, so
    # the study keeps such a category as its text in Hydra's grammar, which the trial is given as is.
    structured: frozenset[str] = frozenset()

    def describe(self) -> dict[str, Any]:
        """The space as JSON, kept in the study: a resumed search must search the same one. The
        neutral keys and Hydra's own are left out."""
        kept = [o for o in self.fixed if not o.startswith("hydra.") and key_of(o) not in self.neutral]
        described = {
            SPACE_PARAMS: {key: json.loads(distribution_to_json(d)) for key, d in sorted(self.distributions.items())},
            SPACE_FIXED: sorted(kept),
            SPACE_CUSTOM: self.custom,
        }
        if self.structured:  # only then: a study made before the key existed compares equal
            described[SPACE_STRUCTURED] = sorted(self.structured)
        return described


def _is_structured(values: Sequence[Any]) -> bool:
    return any(isinstance(value, list | dict) for value in values)


def _choice(key: str, values: Sequence[Any]) -> CategoricalDistribution:
    """Categories in the order written (a shuffle is no order a sampler can use), types kept; where
    one is a list or a dict, every category as its text in Hydra's grammar (Space.structured)."""
    choices = [value.text if isinstance(value, QuotedString) else value for value in values]
    if _is_structured(choices):
        choices = [value_text(value) for value in choices]
    for value in choices:
        if value is not None and not isinstance(value, bool | int | float | str):
            raise SweeperError(f"{key}: the category {value!r} is a {type(value).__name__}; categories are numbers, "
                            "strings, booleans or null.")  # fmt: skip
    return CategoricalDistribution(list(dict.fromkeys(choices)))


def _steps(sweep: RangeSweep) -> int:
    """How many values range(start, stop, step) holds with `stop` included when a step lands on it,
    counted in decimals: summed floats drift (0.1 + 0.2 != 0.3)."""
    start, stop, step = (Decimal(str(v)) for v in (sweep.start, sweep.stop, sweep.step))
    return max(0, int((stop - start) // step) + 1)


def _range(key: str, sweep: RangeSweep) -> BaseDistribution:
    """Upstream's range: from `start` to `stop` included, in steps (ints, or floats where a bound or
    the step is a float); under shuffle(), the categories of Hydra's range, `stop` excluded, as
    upstream lists them."""
    if sweep.step == 0:
        raise SweeperError(
            f"{key}=range({sweep.start}, {sweep.stop}, {sweep.step}): a step of 0 never reaches the end. Give a step "
            f"that is not 0, e.g. range({sweep.start}, {sweep.stop}, 1), or interval(a, b) for a continuous range."
        )
    if sweep.shuffle:
        return _choice(key, list(replace(sweep, shuffle=False).range()))
    count = _steps(sweep)
    if count == 0:
        raise SweeperError(f"{key}=range({sweep.start}, {sweep.stop}, step={sweep.step}) holds no value: a step of "
                           f"{sweep.step} never goes from {sweep.start} to {sweep.stop}.")  # fmt: skip
    step = abs(sweep.step)
    last = Decimal(str(sweep.start)) + Decimal(str(sweep.step)) * (count - 1)
    low, high = sorted((Decimal(str(sweep.start)), last))
    if any(isinstance(v, float) for v in (sweep.start, sweep.stop, sweep.step)):
        return FloatDistribution(float(low), float(high), step=float(step))
    return IntDistribution(int(low), int(high), step=int(step))


def _declared_int(config: DictConfig, key: str) -> bool:
    """Whether the config's schema declares `key` an integer (a plain YAML value declares nothing),
    as OmegaConf's own rules answer it: a copy of the key given a fraction, which an integer node
    refuses and an untyped one takes. (A float or bool value is no integer's.)"""
    parent_key, _, leaf = key_of(key).rpartition(".")
    parent = OmegaConf.select(config, parent_key, default=None) if parent_key else config
    if not isinstance(parent, DictConfig) or leaf not in parent:  # a key the config lacks: launching names it
        return False
    if isinstance(OmegaConf.select(config, key_of(key), default=None), bool | float):
        return False
    probe = copy.deepcopy(parent)
    try:
        with read_write(probe):  # Hydra's configs may be read-only
            probe[leaf] = 0.5
    except ValidationError:
        return True
    except OmegaConfBaseException:
        return False
    return False


def _interval(key: str, sweep: IntervalSweep, config: DictConfig) -> BaseDistribution:
    low, high = sweep.start, sweep.end
    log_scale = "log" in sweep.tags
    unknown = sweep.tags - {"log"}
    if unknown:
        raise SweeperError(
            f"{key}: unknown tag(s) {', '.join(sorted(unknown))} on interval(); the one tag allowed is log."
        )
    if low is None or high is None or not low < high:
        raise SweeperError(f"{key}=interval({low}, {high}) is not a range: interval(low, high) needs low < high.")
    if log_scale and low <= 0:
        raise SweeperError(
            f"{key}=tag(log, interval({low}, {high})) touches or crosses 0: a log-scale range needs 0 < low < high."
        )
    if isinstance(low, int) and isinstance(high, int):  # int(interval(...)) casts both bounds
        return IntDistribution(low, high, log=log_scale)
    if _declared_int(config, key):
        raise SweeperError(
            f"{key} is an integer, but interval({low:g}, {high:g}) samples floats: write "
            f"int(interval({low:g}, {high:g})) for an integer range."
        )
    return FloatDistribution(float(low), float(high), log=log_scale)


def _distribution(override: Override, config: DictConfig) -> BaseDistribution:
    key, value = override.get_key_element(), override.value()
    if isinstance(value, ChoiceSweep):
        return _choice(key, value.list)
    if isinstance(value, RangeSweep):
        return _range(key, value)
    if isinstance(value, IntervalSweep):
        return _interval(key, value, config)
    raise SweeperError(f"{override.input_line}: this kind of sweep cannot be searched. Use {GRAMMAR}.")


def parse_space(
    overrides: Sequence[Override],
    config: DictConfig,
    custom: str | None = None,
    legacy: dict[str, BaseDistribution] | None = None,
) -> Space:
    """The search space of the deprecated search_space mapping (`legacy`), then the sweeper's
    params and the command line's overrides (later wins); `config` (the sweep's) tells integer
    keys from float ones where its schema declares them."""
    distributions: dict[str, BaseDistribution] = dict(legacy or {})
    fixed: dict[str, str] = {}
    structured: set[str] = set()
    for override in overrides:
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        structured.discard(key)
        if override.is_sweep_override():
            distributions[key] = _distribution(override, config)
            if isinstance(override.value(), ChoiceSweep) and _is_structured(override.value().list):
                structured.add(key)
        elif override.is_delete():
            fixed[key] = str(override.input_line)
        else:
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
    return Space(distributions, list(fixed.values()), custom, structured=frozenset(structured))


def parse_overrides(lines: Sequence[str], parser: OverridesParser) -> list[Override]:
    try:
        return parser.parse_overrides(list(lines))
    except HydraException as error:
        raise SweeperError(f"The search space cannot be read: {' '.join(str(error).split())} Use {GRAMMAR}.") from None


# ---- the deprecated hydra.sweeper.search_space (Hydra 1.1) -----------------------------------


def _legacy_distribution(key: str, spec: dict[str, Any]) -> BaseDistribution:
    kind = spec.get("type")
    try:
        if kind == "categorical":
            if _is_structured(spec["choices"]):
                raise TypeError("a category is a list or a dict; write the space as hydra.sweeper.params for those")
            return _choice(key, spec["choices"])
        if kind == "int":
            return IntDistribution(spec["low"], spec["high"], step=spec.get("step") or 1, log=spec.get("log", False))
        if kind == "float":
            return FloatDistribution(spec["low"], spec["high"], step=spec.get("step"), log=spec.get("log", False))
    except (KeyError, TypeError, ValueError) as error:
        raise SweeperError(
            f"hydra.sweeper.search_space.{key} cannot be read ({type(error).__name__}: {error})."
        ) from None
    raise SweeperError(
        f"hydra.sweeper.search_space.{key}.type={kind!r} is not allowed: it must be categorical (with choices), "
        "int or float (with low, high and optionally step and log)."
    )


def legacy_distributions(search_space: dict[str, Any]) -> dict[str, BaseDistribution]:
    """The distributions of hydra.sweeper.search_space, by key."""
    return {str(key): _legacy_distribution(str(key), dict(spec)) for key, spec in search_space.items()}


# ---- a trial's overrides ---------------------------------------------------------------------

_PARSER = OverridesParser.create()


def override_text(key: str, value: Any) -> str:
    """`key=value` in Hydra's grammar, such that Hydra reads back exactly `value` (type included):
    floats in full (repr round-trips), strings quoted where they would read as something else."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, int | float):
        return f"{key}={value!r}"
    text = str(value)
    try:
        if _PARSER.parse_override(f"{key}={text}").value() == text:
            return f"{key}={text}"
    except HydraException:
        pass
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"{key}='{escaped}'"


def trial_overrides(space: Space, params: dict[str, Any], extra: dict[str, Any] | None = None) -> list[str]:
    """What one trial runs: the fixed overrides, its sampled values, then what a custom search
    space derived from them."""
    return [
        *space.fixed,
        *(f"{key}={value}" if key in space.structured else override_text(key, value) for key, value in params.items()),
        *(override_text(key, value) for key, value in (extra or {}).items()),
    ]


def decoded(params: dict[str, Any], structured: Sequence[str]) -> dict[str, Any]:
    """A trial's params as its task received them: the structured keys' texts read back."""
    return {
        key: _PARSER.parse_override(f"{key}={value}").value() if key in structured else value
        for key, value in params.items()
    }


# ---- trials asked first ----------------------------------------------------------------------


def _allowed(distribution: BaseDistribution) -> str:
    if isinstance(distribution, CategoricalDistribution):
        return "one of " + ", ".join(override_text("", c)[1:] for c in distribution.choices)
    assert isinstance(distribution, FloatDistribution | IntDistribution)
    step = f" in steps of {distribution.step}" if distribution.step is not None else ""
    return f"a number from {distribution.low} to {distribution.high}{step}"


def _inside(distribution: BaseDistribution, value: Any) -> bool:
    """Whether the distribution holds `value`: a category among its choices, or a number within
    its range and on its steps."""
    try:
        internal = distribution.to_internal_repr(value)
    except (TypeError, ValueError):  # a category that is not one of the choices, a string for a range
        return False
    if isinstance(distribution, CategoricalDistribution):
        return True
    assert isinstance(distribution, FloatDistribution | IntDistribution)
    if not distribution.low <= internal <= distribution.high:
        return False
    steps = 0.0 if distribution.step is None else (internal - distribution.low) / distribution.step
    return abs(steps - round(steps)) < 1e-8


def enqueued_points(space: Space, entries: Sequence[Any] | None) -> list[dict[str, Any]]:
    """hydra.sweeper.enqueue_trials as points of the space, each checked: a mapping of searched
    keys to values the space holds (a list or dict category as the study keeps it, its text)."""
    points = []
    for index, entry in enumerate(entries or []):
        where = f"hydra.sweeper.enqueue_trials[{index}]"
        if not isinstance(entry, Mapping) or not entry:
            raise SweeperError(f"{where} is {entry!r}; each entry must be a mapping of searched keys to values, "
                               "e.g. {activation: relu, pool: max}.")  # fmt: skip
        point = {}
        for key, value in entry.items():
            if key not in space.distributions:
                searched = ", ".join(sorted(space.distributions)) or "none"
                raise SweeperError(f"{where}: {key} is not a searched key; an enqueued trial sets searched keys only "
                                   f"(searched: {searched}). Fixed values go to every trial as they are.")  # fmt: skip
            if key in space.structured and isinstance(value, list | dict):
                value = value_text(value)
            distribution = space.distributions[key]
            if not _inside(distribution, value):
                raise SweeperError(f"{where}: {key}={value!r} is outside the search space; {key} takes "
                                   f"{_allowed(distribution)}. Change or drop the entry (a narrowed space may "
                                   "drop them all: hydra.sweeper.enqueue_trials=[]).")  # fmt: skip
            point[key] = value
        points.append(point)
    return points
