"""What every fuzz case starts from, made once per campaign in a directory of its own: a tiny data
set in the real IDX format, a run trained on it through the command line (in-process), a folder of
good images, and a small hyperparameter search as the sweeper keeps one. A case works on copies
(`World.scratch`), never on these.

`guarded` is the campaign's safety net: while it holds, the standard place of the data is the tiny
set (a command given data.root=null never reads, let alone downloads, the real one), the user cache
is an empty directory, and commands start in a directory of their own (outputs/ lands there).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import synthetic_split, tiny_args, write_dataset
from fuzz.harness import fresh_logging
from lenet_fmnist import data

EPOCHS = 1  # the world's run; the cases that train run as few


@dataclass(frozen=True)
class World:
    root: Path
    data: Path  # 256 training and 64 test images, gzip-compressed IDX
    run: Path  # a completed one-epoch training run on `data` (checkpoints, metrics.json, .hydra/)
    images: Path  # a folder of a few good images (PNG, JPEG)
    search: Path  # a sweep directory holding a finished search: search.json and optuna.journal
    cwd: Path  # where commands start

    @property
    def checkpoint(self) -> Path:
        return self.run / "checkpoints" / "best.pt"

    def train_args(self, run_dir: Path, *extra: str) -> list[str]:
        """`train` on the tiny set into `run_dir`: one thread, one epoch, on the CPU."""
        return tiny_args(self.data, run_dir, *extra)

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A fresh directory for one case, removed afterwards (whatever the case made unreadable)."""
        cases = self.root / "cases"
        cases.mkdir(exist_ok=True)
        directory = Path(tempfile.mkdtemp(dir=cases))
        try:
            yield directory
        finally:
            _remove(directory)


def _remove(directory: Path) -> None:
    for path in [directory, *directory.rglob("*")]:
        with contextlib.suppress(OSError):
            if not path.is_symlink():
                path.chmod(stat.S_IRWXU)
    shutil.rmtree(directory, ignore_errors=True)


def _imported() -> None:
    """Import now what cases import lazily (SQLAlchemy, Optuna's storages, Pillow's plugins): a case
    stopped by its time limit in the middle of an import would leave the module half made."""
    import optuna.storages  # noqa: F401
    import sqlalchemy.engine  # noqa: F401
    from PIL import Image

    Image.init()


@contextlib.contextmanager
def guarded(world: World) -> Iterator[None]:
    """While cases run: the standard place of the data is the tiny set, the cache is empty, Hydra
    reports errors as users see them, and commands start in world.cwd."""
    _imported()
    saved_env = {key: os.environ.get(key) for key in ("XDG_CACHE_HOME", "MPLCONFIGDIR", "HYDRA_FULL_ERROR")}
    saved_system, saved_cwd = data.SYSTEM_DIR, Path.cwd()
    os.environ.update(XDG_CACHE_HOME=str(world.root / "cache"), MPLCONFIGDIR=str(world.root / "matplotlib"))
    os.environ.pop("HYDRA_FULL_ERROR", None)
    optuna_level = _quiet_optuna()
    data.SYSTEM_DIR = world.data
    os.chdir(world.cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        data.SYSTEM_DIR = saved_system
        _quiet_optuna(optuna_level)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _quiet_optuna(level: int = logging.WARNING) -> int:
    """Set Optuna's log level (its INFO line per study and trial says nothing a case needs); the old one."""
    import optuna

    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(level)
    return old


def _images(directory: Path) -> Path:
    """Two items as Fashion-MNIST draws them (light on black) and one as a photo (dark on white)."""
    directory.mkdir(parents=True)
    images, _ = synthetic_split(3, seed=11)
    Image.fromarray(images[0]).save(directory / "item.png")
    Image.fromarray(np.kron(images[1], np.ones((4, 4), dtype=np.uint8))).save(directory / "large.jpg", quality=90)
    Image.fromarray(255 - images[2]).convert("RGB").save(directory / "photo.bmp")
    return directory


def _search(directory: Path) -> Path:
    """A finished search of two numeric parameters and a category, with four trials, as the sweeper
    stores it (search.json naming the journal beside it)."""
    import optuna
    from optuna_pruning_sweeper.study import StudyRequest, open_study

    directory.mkdir(parents=True)
    space = search_space()
    study, lease = open_study(search_settings(), space, StudyRequest(directory, resume=False, command="app.py"))
    try:
        for index in range(4):
            trial = study.ask(space.distributions)
            study.tell(trial, trial.params["x"] ** 2 + index / 10)
        trial = study.ask(space.distributions)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    finally:
        lease.release()
    return directory


def search_space() -> object:
    """The space of the world's search: a number, a category and a fixed override."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna_pruning_sweeper.space import Space

    return Space({"x": FloatDistribution(-1, 1), "kind": CategoricalDistribution(["a", "b"])}, fixed=["epochs=1"])


def search_settings(storage: str | None = None) -> object:
    """The sweeper's settings of the world's search (and of the cases that open it again)."""
    from optuna_pruning_sweeper.names import PrunerName
    from optuna_pruning_sweeper.settings import Settings

    return Settings(
        n_trials=4, n_jobs=1, directions=("minimize",), max_failure_rate=1.0, pruner=PrunerName.median,
        pruner_startup_trials=1, pruner_warmup_epochs=0, storage=storage, study_name=None,
        sampler={"_target_": "optuna.samplers.RandomSampler", "seed": 0},
    )  # fmt: skip


def at(root: Path) -> World:
    """The world `build` made in `root`."""
    return World(
        root=root,
        data=root / "data",
        run=root / "run",
        images=root / "images",
        search=root / "search",
        cwd=root / "cwd",
    )


def build(root: Path) -> World:
    """The world in `root` (made if need be): its data, run, images and search."""
    from lenet_fmnist.cli import main

    root.mkdir(parents=True, exist_ok=True)
    (root / "cwd").mkdir(exist_ok=True)
    world = at(root)
    write_dataset(world.data, train=256, test=64, gz=True)
    _images(world.images)
    # fresh_logging: Hydra's handlers of the run (its train.log among them) go with it, so that no
    # later case in this process writes into the world's files.
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with guarded(world), fresh_logging(), quiet[0], quiet[1] as log:
        code = main(world.train_args(world.run))
        assert code == 0 and (world.run / "metrics.json").is_file(), log.getvalue()
        _search(world.search)
    return world
