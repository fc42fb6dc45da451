"""The search's parts in-process, without a subprocess: the space as upstream's grammar means it,
values passed to trials exactly, the journal shared with running trials, resuming, the sweeper's
keys against their defaults and Optuna's.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.optuna_pruning_sweeper import config
from hydra_plugins.optuna_pruning_sweeper.optuna_pruning_sweeper import OptunaSweeper
from optuna_pruning_sweeper.errors import SweeperError
from optuna_pruning_sweeper.names import JOURNAL_FILE, SPACE_ATTR, PrunerName
from optuna_pruning_sweeper.samplers import for_installed_optuna, make_sampler
from optuna_pruning_sweeper.settings import Settings
from optuna_pruning_sweeper.space import Space, parse_space, trial_overrides
from optuna_pruning_sweeper.storage import Location, read_location
from optuna_pruning_sweeper.study import StudyRequest, open_study
from optuna_pruning_sweeper.trial import open_trial

NEEDS = {"cmaes": ("cmaes",), "qmc": ("scipy",), "gp": ("scipy", "torch")}


def space_of(*overrides: str) -> Space:
    return parse_space(OverridesParser.create().parse_overrides(list(overrides)), OmegaConf.create({}))


def settings(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "n_trials": 3, "n_jobs": 1, "directions": ("minimize",), "max_failure_rate": 0.0,
        "pruner": PrunerName.median, "pruner_startup_trials": 0, "pruner_warmup_epochs": 0, "storage": None,
        "study_name": None, "sampler": {"_target_": "optuna.samplers.RandomSampler", "seed": 0},
    }  # fmt: skip
    return Settings(**{**values, **changes})


def open_ended(tmp_path: Path, space: Space, resume: bool = False) -> optuna.Study:
    """open_study as by a search that has since ended: its lease released (these tests play
    several searches in one process)."""
    study, lease = open_study(settings(), space, StudyRequest(tmp_path, resume, "python app.py"))
    lease.release()
    return study


def test_the_grammar_keeps_types_as_upstream_documents_it() -> None:
    found = space_of(
        "a=choice(1, 2)", "b='1',2,true", "c=range(1, 4)", "d=range(0, 1, step=0.25)", "e=interval(-5.5, 5.5)",
        "f=int(interval(0, 2))", "g=tag(log, interval(0.001, 1))", "h=shuffle(range(1, 4))", "i=relu,tanh",
    ).distributions  # fmt: skip
    assert found["a"] == CategoricalDistribution([1, 2])  # ints stay ints
    assert found["b"] == CategoricalDistribution(["1", 2, True])  # a quoted '1' stays a string
    assert found["c"] == IntDistribution(1, 4)  # upstream's range reaches its stop
    assert found["d"] == FloatDistribution(0.0, 1.0, step=0.25)
    assert found["e"] == FloatDistribution(-5.5, 5.5)  # a float range whatever the key held
    assert found["f"] == IntDistribution(0, 2)
    assert found["g"] == FloatDistribution(0.001, 1.0, log=True)
    assert found["h"] == CategoricalDistribution([1, 2, 3])  # upstream's shuffle lists Hydra's range, stop excluded
    assert found["i"] == CategoricalDistribution(["relu", "tanh"])


def test_a_trial_runs_exactly_the_values_the_study_records() -> None:
    """No rounding: a value near the end of interval(0.99, 0.99999) stays inside it, and every
    value reads back, type included, as Hydra parses the trial's overrides."""
    space = space_of("x=interval(0.99, 0.99999)", "n=choice(1, 2)", "s='1',two", "flag=true,false")
    params = {"x": 0.9999861234567891, "n": 2, "s": "1", "flag": False}
    overrides = trial_overrides(space, params)
    parsed = {o.get_key_element(): o.value() for o in OverridesParser.create().parse_overrides(overrides)}
    assert parsed == params and all(type(parsed[k]) is type(v) for k, v in params.items()), overrides
    assert parsed["x"] < 0.99999


def test_shuffle_makes_the_same_space_every_time() -> None:
    """A resumed search compares its space with the study's: shuffle() must not change it."""
    described = {str(space_of("a=shuffle(x,y,z)", "b=shuffle(range(0, 9))").describe()) for _ in range(8)}
    assert len(described) == 1


def test_a_trial_opens_a_journal_that_another_trial_is_appending_to(tmp_path: Path) -> None:
    """Trials of one batch append to the journal at once: a half-written last line is another
    trial's record in the making, not damage."""
    study = open_ended(tmp_path, space_of("x=interval(0, 1)"))
    trial = study.ask({"x": FloatDistribution(0, 1)})
    with (tmp_path / JOURNAL_FILE).open("ab") as journal:
        journal.write(b'{"op_code": 4, "worker_id": "another-tri')  # cut mid-record

    opened = open_trial(Location(None, tmp_path.name), tmp_path, trial.number)

    assert opened.params == trial.params
    opened.report(0.5, 1)
    assert not opened.should_prune()


def test_a_journal_whose_last_line_a_kill_cut_is_resumed_and_stays_readable(tmp_path: Path) -> None:
    space = space_of("x=interval(0, 1)")
    study = open_ended(tmp_path, space)
    study.tell(study.ask(space.distributions), 1.0)
    journal = tmp_path / JOURNAL_FILE
    intact = journal.read_bytes()
    journal.write_bytes(intact + b'{"op_code": 5, "tri')  # the search was killed while writing

    resumed = open_ended(tmp_path, space, resume=True)
    resumed.tell(resumed.ask(space.distributions), 2.0)  # appended after the cut line was dropped

    assert journal.read_bytes().startswith(intact)
    assert [t.value for t in read_location(tmp_path).load(tmp_path).trials] == [1.0, 2.0]


def test_a_journal_damaged_before_its_last_line_is_refused(tmp_path: Path) -> None:
    space = space_of("x=interval(0, 1)")
    study = open_ended(tmp_path, space)
    study.tell(study.ask(space.distributions), 1.0)
    journal = tmp_path / JOURNAL_FILE
    journal.write_bytes(b"not a record\n" + journal.read_bytes())
    with pytest.raises(SweeperError, match=r"optuna.journal cannot be used .*line 1 of the journal is damaged"):
        open_study(settings(), space, StudyRequest(tmp_path, True, "python app.py"))


def test_a_study_with_trials_is_not_reused_without_resume_and_the_message_names_its_journal(tmp_path: Path) -> None:
    space = space_of("x=interval(0, 1)")
    open_ended(tmp_path, space)
    with pytest.raises(SweeperError) as refused:
        open_study(settings(), space, StudyRequest(tmp_path, False, "python app.py"))
    assert f"in {tmp_path / JOURNAL_FILE} already holds" in str(refused.value) and "None" not in str(refused.value)


@pytest.mark.parametrize("saved", [{"fixed": []}, {"params": {}}, {"params": [], "fixed": []}, "x"])
def test_a_resume_refuses_a_study_whose_record_of_its_space_was_edited(tmp_path: Path, saved: Any) -> None:
    """The space a study keeps is a user attribute, which anyone can rewrite: a form the sweeper
    does not write is refused with one message, not a KeyError from comparing it."""
    space = space_of("x=interval(0, 1)")
    open_ended(tmp_path, space).set_user_attr(SPACE_ATTR, saved)
    with pytest.raises(SweeperError, match="the study's own record of its space is not one this sweeper writes"):
        open_study(settings(), space, StudyRequest(tmp_path, True, "python app.py"))


@pytest.mark.parametrize(("launcher_jobs", "expected"), [(None, 1), (3, 3), (-1, "cores"), (-2, "cores - 1")])
def test_the_launchers_n_jobs_sets_the_batch_in_joblibs_meaning(launcher_jobs: int | None, expected: Any) -> None:
    joblib = pytest.importorskip("joblib")
    sweeper = OptunaSweeper(n_jobs=None)
    sweeper.config = OmegaConf.create({"hydra": {"launcher": {"n_jobs": launcher_jobs}}})
    cores = joblib.cpu_count()
    wanted = {"cores": cores, "cores - 1": max(1, cores - 1)}.get(expected, expected)
    if expected == "cores - 1" and cores == 1:
        with pytest.raises(SweeperError, match=r"hydra\.launcher\.n_jobs=-2"):
            sweeper._n_jobs()
        return
    assert sweeper._n_jobs() == wanted


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # qmc, gp: Optuna's word
@pytest.mark.parametrize("name", sorted(config.SAMPLERS))
def test_each_sampler_option_carries_optunas_defaults_and_makes_its_sampler(name: str) -> None:
    for package in NEEDS.get(name, ()):  # the `samplers` extra's, or torch (gp), which no extra brings
        pytest.importorskip(package)
    node = config.SAMPLERS[name]
    conf = OmegaConf.structured(node)
    sampler_class = getattr(optuna.samplers, SUCCESSOR.get(name, conf._target_.rsplit(".", 1)[1]))
    signature = inspect.signature(sampler_class).parameters
    for field in dataclasses.fields(node):
        if not field.name.startswith("_"):
            argument = {"n_ehvi_candidates": "n_ei_candidates"}.get(field.name, field.name)  # motpe's, as TPE's
            assert field.default == signature[argument].default, f"{name}.{field.name}"
    space = space_of("x=choice(1, 2)", "y=range(0, 3)")
    made = make_sampler(for_installed_optuna({**OmegaConf.to_container(conf), "seed": 1}), space, 0)
    assert isinstance(made, sampler_class)


# Every key of every sampler config of upstream's 1.3 config.py, with the value its docs print
# (`--cfg hydra -p hydra.sweeper`), and qmc's of upstream's later config.
UPSTREAM_SAMPLER_KEYS: dict[str, dict[str, Any]] = {
    "tpe": {
        "seed": 123, "consider_prior": True, "prior_weight": 1.0, "consider_magic_clip": True,
        "consider_endpoints": False, "n_startup_trials": 10, "n_ei_candidates": 24, "multivariate": False,
        "warn_independent_sampling": True,
    },
    "random": {"seed": 123},
    "cmaes": {
        "seed": 123, "x0": None, "sigma0": None, "independent_sampler": None, "warn_independent_sampling": True,
        "consider_pruned_trials": False, "restart_strategy": None, "inc_popsize": 2, "use_separable_cma": False,
        "source_trials": None,
    },
    "nsgaii": {
        "seed": 123, "population_size": 50, "mutation_prob": None, "crossover_prob": 0.9, "swapping_prob": 0.5,
        "constraints_func": None,
    },
    "motpe": {
        "seed": 123, "consider_prior": True, "prior_weight": 1.0, "consider_magic_clip": True,
        "consider_endpoints": False, "n_startup_trials": 10, "n_ehvi_candidates": 24,
    },
    "qmc": {
        "seed": 123, "qmc_type": "sobol", "scramble": False, "independent_sampler": None,
        "warn_asynchronous_seeding": True, "warn_independent_sampling": True,
    },
    "grid": {},
}  # fmt: skip
SUCCESSOR = {"motpe": "TPESampler"}  # Optuna 4 removed MOTPESampler


@pytest.mark.filterwarnings("ignore::FutureWarning")  # Optuna's word on its deprecated arguments
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("name", sorted(UPSTREAM_SAMPLER_KEYS))
def test_every_sampler_key_upstream_documents_is_taken(name: str, caplog: pytest.LogCaptureFixture) -> None:
    """Composed as Hydra composes a config that sets them all, then made into the sampler: Optuna
    takes every key (none of them is one Optuna has removed)."""
    for package in NEEDS.get(name, ()):
        pytest.importorskip(package)
    node = OmegaConf.merge(OmegaConf.structured(config.SAMPLERS[name]), UPSTREAM_SAMPLER_KEYS[name])
    made = make_sampler(
        for_installed_optuna(OmegaConf.to_container(node)), space_of("x=choice(1, 2)", "y=range(0, 3)"), 0
    )
    target = SUCCESSOR.get(name, node._target_.rsplit(".", 1)[1])
    assert type(made) is getattr(optuna.samplers, target)
    assert "no effect" not in caplog.text, caplog.text


class TPEOfAnOptunaWithoutPriorWeight(optuna.samplers.TPESampler):
    """TPE as an Optuna that removed prior_weight would make it."""

    def __init__(self, *, seed: int | None = None, n_startup_trials: int = 10) -> None:
        super().__init__(seed=seed, n_startup_trials=n_startup_trials)


def test_a_key_optuna_removed_is_ignored_with_a_one_line_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A documented key the sampler no longer takes: set, it has no effect and one line says so;
    left at null, nothing is said. A key nobody documents is still refused."""
    target = f"{__name__}.{TPEOfAnOptunaWithoutPriorWeight.__name__}"
    node = {"_target_": target, "seed": 1, "prior_weight": 2.0, "consider_prior": None}
    made = make_sampler(for_installed_optuna(node), space_of("x=choice(1, 2)"), 0)
    assert isinstance(made, TPEOfAnOptunaWithoutPriorWeight)
    (line,) = [record.getMessage() for record in caplog.records]
    assert line.startswith("hydra.sweeper.sampler.prior_weight=2.0 has no effect:") and "\n" not in line, line
    with pytest.raises(SweeperError, match="cannot be made"):
        make_sampler(for_installed_optuna({**node, "prior_wieght": 2.0}), space_of("x=choice(1, 2)"), 0)


def test_a_sampler_argument_that_is_an_object_is_a_node_of_its_own() -> None:
    """As upstream's sweeper (made by Hydra's recursive instantiate) took it: e.g. CMA-ES's
    independent sampler, `independent_sampler: {_target_: optuna.samplers.RandomSampler}`."""
    pytest.importorskip("cmaes")
    node = OmegaConf.merge(
        OmegaConf.structured(config.SAMPLERS["cmaes"]),
        {"independent_sampler": {"_target_": "optuna.samplers.RandomSampler", "seed": 3}},
    )
    made = make_sampler(OmegaConf.to_container(node), space_of("x=interval(0, 1)"), 0)
    assert isinstance(made, optuna.samplers.CmaEsSampler)
