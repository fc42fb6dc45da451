"""Hyperparameter search with Optuna: what the `hydra/sweeper=optuna` plugin
(src/hydra_plugins/lenet_fmnist_optuna) does, in terms of this project.

- The search space, read from Hydra's override grammar: comma lists, `choice()` and `range()` are
  categorical (config groups included), `interval(a, b)` a float or int range and
  `tag(log, interval(a, b))` a log-scale one; plain values are passed to every trial as they are.
- The study: one per sweep directory, kept in an Optuna storage that every trial's process opens
  (by default the journal file `<sweep dir>/optuna.journal`, which processes on one machine or on
  nodes sharing a filesystem can append to); `search.json` in the sweep directory says where it is.
- The search: trials asked in batches, launched through Hydra's launcher, told their outcome, and
  resumed after a crash (trials the dead search left running are marked failed and asked again).
- The objective: the trial's best-epoch *validation* accuracy from its metrics.json. The test
  accuracy is recorded there as for any run and never feeds the search.
- The trial's side, `trial_reporter`: reports each epoch's validation accuracy to the study and
  raises Pruned when the pruner says so.

This module must not import torch; it imports optuna (the `search` extra), so only the plugin, a
search's trials and the report of a search directory import it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.types import IntervalSweep, Override, Transformer
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from lenet_fmnist.errors import Pruned, UserError
from lenet_fmnist.rundir import Status, read_metrics
from lenet_fmnist.storage import write_json
from lenet_fmnist.vocabulary import RESULT_NEUTRAL_KEYS, SEARCH_FILE, SEARCH_TRIAL

log = logging.getLogger(__name__)

JOURNAL_FILE = "optuna.journal"  # the default storage, in the sweep directory
SPACE_ATTR = "space"  # the study's user attribute holding its search space
PRUNER_ATTR = "pruner"  # ... and the pruner its trials consult
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards n_trials
# Sampled floats are passed to a trial with this many significant digits: the run directory's
# name stays readable and short, and no hyperparameter here has an effect at the 5th digit.
FLOAT_DIGITS = 4


class SamplerName(Enum):
    tpe = "tpe"
    random = "random"


class PrunerName(Enum):
    median = "median"
    hyperband = "hyperband"
    none = "none"


@dataclass(frozen=True)
class Settings:
    """The sweeper's keys (conf: hydra.sweeper.*), as the plugin received them."""

    n_trials: int
    n_jobs: int  # trials launched at once
    seed: int | None
    sampler: SamplerName
    pruner: PrunerName
    pruner_startup_trials: int
    pruner_warmup_epochs: int
    storage: str | None
    study_name: str | None

    def check(self) -> None:
        for key, value, least in (
            ("n_trials", self.n_trials, 1),
            ("n_jobs", self.n_jobs, 1),
            ("pruner_startup_trials", self.pruner_startup_trials, 0),
            ("pruner_warmup_epochs", self.pruner_warmup_epochs, 0),
        ):
            if value < least:
                raise UserError(f"hydra.sweeper.{key}={value} is not allowed: it must be an integer >= {least}.")


# ---- the search space --------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    distributions: dict[str, BaseDistribution]  # by the override's key, e.g. "optimizer.lr", "activation"
    fixed: list[str]  # overrides passed to every trial as they are

    def describe(self) -> dict[str, Any]:
        """The space as JSON, kept in the study: a resumed search must search the same one. Keys
        that never change results (resume, threads, ...) and Hydra's own keys are left out."""
        neutral = {*RESULT_NEUTRAL_KEYS, "experiment"}
        kept = [o for o in self.fixed if not o.startswith("hydra.") and o.split("=", 1)[0].lstrip("+~") not in neutral]
        return {
            "params": {key: json.loads(distribution_to_json(d)) for key, d in sorted(self.distributions.items())},
            "fixed": sorted(kept),
        }


def _interval(key: str, sweep: IntervalSweep, integer: bool) -> BaseDistribution:
    """Hydra's interval() holds floats whatever was written: the key's type decides."""
    low, high = sweep.start, sweep.end
    log_scale = "log" in sweep.tags
    unknown = sweep.tags - {"log"}
    if unknown:
        raise UserError(
            f"{key}: unknown tag(s) {', '.join(sorted(unknown))} on interval(); the one tag allowed is log."
        )
    if low is None or high is None or not low < high:
        raise UserError(f"{key}=interval({low}, {high}) is not a range: interval(low, high) needs low < high.")
    if log_scale and low <= 0:
        raise UserError(
            f"{key}=tag(log, interval({low}, {high})) touches or crosses 0: a log-scale range needs 0 < low < high."
        )
    if integer:
        if not (float(low).is_integer() and float(high).is_integer()):
            raise UserError(f"{key} is an integer, but interval({low}, {high}) has fractional bounds.")
        return IntDistribution(int(low), int(high), log=log_scale)
    return FloatDistribution(float(low), float(high), log=log_scale)


def _holds_int(config: DictConfig, key: str) -> bool:
    value = OmegaConf.select(config, key.lstrip("+~"), default=None)
    return isinstance(value, int) and not isinstance(value, bool)


def parse_space(overrides: Sequence[Override], config: DictConfig) -> Space:
    """The search space of the sweeper's params and the command line's overrides (later wins);
    `config` (the sweep's) tells integer keys from float ones."""
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in overrides:
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        if override.is_discrete_sweep():
            values = override.sweep_iterator(transformer=Transformer.identity)
            distributions[key] = CategoricalDistribution(list(dict.fromkeys(map(_choice_text, values))))
        elif override.is_interval_sweep():
            distributions[key] = _interval(key, override.value(), _holds_int(config, key))  # type: ignore[arg-type]
        elif override.is_sweep_override():
            raise UserError(
                f"{override.input_line}: this kind of sweep cannot be searched. Use a comma list or choice() for "
                "categories, interval(a, b) for a range, tag(log, interval(a, b)) for a log-scale range."
            )
        else:
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
    if not distributions:
        raise UserError(
            "The search space is empty: give at least one parameter to search, e.g. activation=relu,tanh or "
            "'optimizer.lr=tag(log, interval(0.001, 0.3))', on the command line or in hydra.sweeper.params."
        )
    return Space(distributions, list(fixed.values()))


def _choice_text(value: Any) -> str:
    """A category as an override's value; booleans as YAML writes them (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else Transformer.str(value)


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.{FLOAT_DIGITS}g}"
    return str(value)


def trial_overrides(space: Space, params: dict[str, Any]) -> list[str]:
    """What one trial runs: the fixed overrides and its sampled values."""
    return [*space.fixed, *(f"{key}={_value_text(params[key])}" for key in space.distributions)]


# ---- the study -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where a search's study is: search.json in the sweep directory."""

    storage: str | None  # None: the journal file in the sweep directory
    study_name: str

    @contextlib.contextmanager
    def problems(self, sweep_dir: Path) -> Iterator[None]:
        """Turn what a bad storage raises (OSError, a corrupt journal's JSON error, SQLAlchemy's
        errors: the user's to fix) into a UserError naming it."""
        try:
            yield
        except (UserError, KeyError):  # KeyError: no such study, which the caller explains
            raise
        except Exception as error:
            where = self.storage or sweep_dir / JOURNAL_FILE
            raise UserError(
                f"The search's storage {where} cannot be used ({type(error).__name__}: {error}). Give a writable "
                "journal file or an RDB URL with hydra.sweeper.storage=..., or another hydra.sweep.dir=DIR "
                "(the default storage is DIR/optuna.journal). Nothing was changed."
            ) from None

    def open(self, sweep_dir: Path) -> BaseStorage:
        with self.problems(sweep_dir):
            if self.storage is not None and "://" in self.storage:
                return optuna.storages.RDBStorage(self.storage)
            path = sweep_dir / JOURNAL_FILE if self.storage is None else Path(self.storage).expanduser()
            _check_journal(path)
            return JournalStorage(JournalFileBackend(str(path)))

    def load(self, sweep_dir: Path) -> optuna.Study:
        storage = self.open(sweep_dir)
        try:
            with self.problems(sweep_dir):
                return optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError:
            raise UserError(f"The storage of {sweep_dir} holds no study named {self.study_name!r}.") from None


def _check_journal(path: Path) -> None:
    """Refuse a journal file whose lines are not all JSON records. Optuna forgives a bad last line
    (another process may be writing it) until the next record is appended after it, which would
    bury the damage; no process writes while a search starts."""
    if not path.is_file():
        return
    with path.open("rb") as journal:
        for number, line in enumerate(journal, start=1):
            try:
                if not line.endswith(b"\n") or not isinstance(json.loads(line), dict):
                    raise ValueError("not a complete JSON record")
            except ValueError as error:
                raise ValueError(f"line {number} of the journal is damaged ({error})") from None


def read_location(sweep_dir: Path) -> Location | None:
    path = sweep_dir / SEARCH_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        return Location(saved["storage"], saved["study_name"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path} cannot be read ({error}); it says where the search's study is stored.") from None


def make_sampler(settings: Settings, asked_before: int) -> optuna.samplers.BaseSampler:
    """The sampler. A resumed search offsets the seed by the trials already asked, so it does not
    draw the first run's values again."""
    seed = None if settings.seed is None else settings.seed + asked_before
    if settings.sampler is SamplerName.random:
        return optuna.samplers.RandomSampler(seed=seed)
    # multivariate: the learning rate that suits one optimizer does not suit another; constant_liar:
    # trials of one batch are asked before any ends, and should not all land in the same place.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)


def make_pruner(spec: dict[str, Any], epochs: int) -> optuna.pruners.BasePruner:
    """The pruner from its description in the study (the trials' processes build it from there).
    Hyperband is told the epochs: left to guess ("auto"), it prunes nothing before a trial completes."""
    name = PrunerName(spec["name"])
    if name is PrunerName.median:
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec["startup_trials"], n_warmup_steps=spec["warmup_epochs"]
        )
    if name is PrunerName.hyperband:
        return optuna.pruners.HyperbandPruner(min_resource=max(1, spec["warmup_epochs"]), max_resource=epochs)
    return optuna.pruners.NopPruner()


def _space_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    changes = []
    for key in sorted(saved["params"].keys() | current["params"].keys()):
        old, new = saved["params"].get(key), current["params"].get(key)
        if old != new:
            changes.append(f"{key}: {json.dumps(old)} -> {json.dumps(new)}")
    for gone in sorted(set(saved["fixed"]) - set(current["fixed"])):
        changes.append(f"{gone} is no longer given")
    for added in sorted(set(current["fixed"]) - set(saved["fixed"])):
        changes.append(f"{added} is new")
    return changes


def open_study(settings: Settings, sweep_dir: Path, space: Space, resume: bool) -> optuna.Study:
    """Create the sweep directory's study, or continue it with resume=true; refuse a changed space."""
    location = read_location(sweep_dir)
    wanted = Location(settings.storage, settings.study_name or sweep_dir.name)
    if location is not None and location != wanted:
        raise UserError(
            f"{sweep_dir} holds a search stored in {location.storage or JOURNAL_FILE} as study "
            f"{location.study_name!r}; this command asks for {wanted.storage or JOURNAL_FILE} as "
            f"{wanted.study_name!r}. Run it with the same hydra.sweeper.storage and study_name."
        )
    storage = wanted.open(sweep_dir)
    with wanted.problems(sweep_dir):  # looked up before created: a refused command writes nothing
        if any(known.study_name == wanted.study_name for known in storage.get_all_studies()):
            study = optuna.load_study(study_name=wanted.study_name, storage=storage)
        else:
            study = optuna.create_study(storage=storage, study_name=wanted.study_name, direction="maximize")
    saved, described = study.user_attrs.get(SPACE_ATTR), space.describe()
    if saved is not None and not resume:
        raise UserError(
            f"The study {wanted.study_name!r} in {wanted.storage} already holds {len(study.trials)} trial(s); it is "
            "left untouched. Pass resume=true to continue it, or choose another hydra.sweeper.study_name."
        )
    if saved is not None and saved != described:
        raise UserError(
            f"resume=true, but the search space differs from the one the study in {sweep_dir} searched: "
            f"{'; '.join(_space_changes(saved, described))}. Resume with the same space, or start a new "
            "search in another hydra.sweep.dir."
        )
    if saved is None:
        study.set_user_attr(SPACE_ATTR, described)
    study.set_user_attr(
        PRUNER_ATTR,
        {
            "name": settings.pruner.value,
            "startup_trials": settings.pruner_startup_trials,
            "warmup_epochs": settings.pruner_warmup_epochs,
        },
    )
    if location is None:
        write_json(sweep_dir / SEARCH_FILE, {"storage": wanted.storage, "study_name": wanted.study_name})
    study.sampler = make_sampler(settings, len(study.trials))
    return study


def retry_abandoned(study: optuna.Study) -> None:
    """Trials a dead search left running: mark them failed and ask their values again."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.warning("Trial %d was left running by an earlier search: marked failed, asked again.", trial.number)
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


# ---- the objective ---------------------------------------------------------------------------


def read_outcome(run_dir: Path) -> tuple[TrialState, float | None]:
    """The trial's state and objective from its run's metrics.json: a completed run's best-epoch
    validation accuracy; a pruned run is PRUNED; anything else (no file, diverged...) FAIL."""
    metrics = read_metrics(run_dir)
    if metrics is None:
        return TrialState.FAIL, None
    value = metrics.get("val_acc")
    if metrics.get("status") == Status.completed and isinstance(value, int | float) and math.isfinite(value):
        return TrialState.COMPLETE, float(value)
    if metrics.get("status") == Status.pruned:
        return TrialState.PRUNED, None
    return TrialState.FAIL, None


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


Launch = Callable[[list[list[str]], int], Sequence[Any]]  # (overrides per job, first job number) -> JobReturns


def _run_dir(job: Any) -> Path | None:
    hydra_cfg = getattr(job, "hydra_cfg", None)
    return None if hydra_cfg is None else Path(str(hydra_cfg.hydra.runtime.output_dir))


def _consecutive(trials: list[optuna.Trial]) -> list[list[optuna.Trial]]:
    """Trials in runs of consecutive numbers (a trial asked again after a crash has an older one)."""
    runs: list[list[optuna.Trial]] = []
    for trial in trials:
        if runs and trial.number == runs[-1][-1].number + 1:
            runs[-1].append(trial)
        else:
            runs.append([trial])
    return runs


def _launch(trials: list[optuna.Trial], space: Space, launch: Launch) -> list[tuple[optuna.Trial, Any]]:
    """Run consecutive trials as one batch of jobs. Hydra numbers a batch's jobs from the first
    number it is given, so each run directory's name starts with its trial's number."""
    batch = []
    for trial in trials:
        overrides = trial_overrides(space, trial.params)
        trial.set_user_attr("overrides", overrides)
        batch.append([*overrides, f"++hydra.job.env_set.{SEARCH_TRIAL}={trial.number}"])
    return list(zip(trials, launch(batch, trials[0].number), strict=True))


def run_batch(study: optuna.Study, space: Space, size: int, launch: Launch) -> int:
    """Ask `size` trials, run them at once, tell each its outcome; return how many failed."""
    trials = [study.ask(space.distributions) for _ in range(size)]
    jobs = [pair for run in _consecutive(trials) for pair in _launch(run, space, launch)]
    failures = 0
    for trial, job in jobs:
        run_dir = _run_dir(job)
        state, value = read_outcome(run_dir) if run_dir is not None else (TrialState.FAIL, None)
        if run_dir is not None:
            trial.set_user_attr("run_dir", run_dir.name)
        study.tell(trial, value, state=None if state is TrialState.COMPLETE else state)
        failures += state is TrialState.FAIL
        shown = f"val acc {value:.4f}" if value is not None else state.name.lower()
        log.info("Trial %d: %s (%d of %d finished)", trial.number, shown, finished(study), len(study.trials))
    return failures


def search(settings: Settings, study: optuna.Study, space: Space, launch: Launch) -> int:
    """Run trials until `n_trials` are complete or pruned; return how many failed on the way.
    Gives up after as many failures as trials wanted: something is wrong with every trial."""
    retry_abandoned(study)
    failures = 0
    while (left := settings.n_trials - finished(study)) > 0:
        failures += run_batch(study, space, min(settings.n_jobs, left), launch)
        if failures >= settings.n_trials:
            raise UserError(
                f"{failures} trials failed (see their run directories' logs and metrics.json); the search stops. "
                "Its study keeps every finished trial: fix the cause and run the same command with resume=true."
            )
    return failures


# ---- a trial's process -----------------------------------------------------------------------


def trial_reporter(sweep_dir: Path, number: int, epochs: int) -> Callable[[dict[str, Any]], None]:
    """train.EpochCallback for trial `number` of the search in `sweep_dir`: reports each epoch's
    validation accuracy to the study; raises Pruned when the pruner stops the trial (never after
    the last epoch, which completes the run anyway)."""
    location = read_location(sweep_dir)
    if location is None:
        raise UserError(f"{sweep_dir} holds no {SEARCH_FILE}: trial {number} cannot find its search.")
    storage = location.open(sweep_dir)
    study = optuna.load_study(study_name=location.study_name, storage=storage)
    study.pruner = make_pruner(study.user_attrs[PRUNER_ATTR], epochs)
    study_id = storage.get_study_id_from_name(location.study_name)
    trial = optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))

    def report(record: dict[str, Any]) -> None:
        epoch, value = record["epoch"], record["val_acc"]
        trial.report(value, epoch)
        if epoch < epochs and trial.should_prune():
            raise Pruned(
                f"Trial {number} pruned after epoch {epoch} of {epochs}: validation accuracy {value:.4f} is "
                "below what the pruner asks of other trials at this epoch."
            )

    return report
