"""The `report` command: real sweeps on tiny synthetic data (conftest's IDX files), then the
report; and its statistics."""

from __future__ import annotations

import ast
import csv
import json
import math
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import CLI
from lenet_fmnist.cli import config_dir, main
from lenet_fmnist.report import analysis, figures, measures, runs, search_summary, stats, tables, writer
from lenet_fmnist.report.configurations import configurations, duplicates, group_keys
from lenet_fmnist.report.effects import adjust_for_multiplicity, analyse
from lenet_fmnist.report.labels import label
from lenet_fmnist.run import validation
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.files import SEARCH_FILE

VAL_IMAGES = 32


def tiny(data: Path) -> list[str]:
    return [f"data.root={data}", f"data.val_size={VAL_IMAGES}", "epochs=2", "threads=1", "batch_size=32"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory, cli: CLI, tiny_data: Path) -> dict[str, Path]:
    """Three real sweeps: two activations x two seeds; one that diverges; and, made by hand from
    the first, a run killed before its first epoch ended and one interrupted."""
    where = tmp_path_factory.mktemp("sweeps")
    activation = where / "activation"
    done = cli.run(
        "train", "-m", "experiment=activation", "+variant=base,tanh", "seed=0,1", *tiny(tiny_data),
        f"hydra.sweep.dir={activation}", timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    diverged = where / "diverged"
    blown = cli.run(
        "train", "-m", "experiment=optimizer", "+variant=base", "optimizer.lr=1e6", "seed=0", *tiny(tiny_data),
        "batch_size=8", f"hydra.sweep.dir={diverged}", timeout=300,
    )  # fmt: skip
    assert blown.returncode == 1, blown.stderr[-3000:]  # a failed job makes the sweep exit 1
    extra = where / "extra"
    source = next(activation.glob("0_*"))
    never = shutil.copytree(source, extra / "never_started", ignore=shutil.ignore_patterns("checkpoints", "events*"))
    (never / "metrics.json").unlink()
    stopped = shutil.copytree(source, extra / "interrupted", ignore=shutil.ignore_patterns("checkpoints", "events*"))
    metrics = json.loads((stopped / "metrics.json").read_text())
    (stopped / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted", "test_acc": None}))
    return {"activation": activation, "diverged": diverged, "extra": extra, "root": where}


def test_sweep_job_directories_read_as_run_names(sweeps: dict[str, Path]) -> None:
    # TensorBoard names each run by its directory: the overrides, no data path, no `experiment=`.
    names = sorted(path.name for path in sweeps["activation"].iterdir() if path.is_dir())
    assert names == [
        f"{num}_+variant={variant},batch_size=32,data.val_size=32,epochs=2,seed={seed}"
        for num, (seed, variant) in enumerate([(0, "base"), (0, "tanh"), (1, "base"), (1, "tanh")])
    ]


def test_report_of_real_sweeps_lists_every_configuration_and_every_failure(cli: CLI, sweeps: dict[str, Path]) -> None:
    result = cli.run("report", str(sweeps["activation"]), str(sweeps["diverged"]), str(sweeps["extra"]))
    assert result.returncode == 0, result.stderr
    configurations, effects = result.stdout.split("Effects in activation:")
    table = [
        line
        for line in configurations.splitlines()
        if line.startswith("| activation") or line.startswith("| optimizer")
    ]
    assert "| Δ test acc vs base [95% CI] | p | Holm p |" in effects  # raw intervals, then the adjusted p
    # relu (2 seeds + the two hand-made unfinished copies of its seed-0 run), tanh, the diverged SGD.
    assert len(table) == 3, result.stdout
    relu, tanh, blown = table
    assert "| relu |" in relu and "| 2 | 2 completed, 2 unfinished |" in relu
    assert "| tanh |" in tanh and "| 2 | 2 completed |" in tanh
    assert "| 0 | 1 diverged |" in blown and "optimizer.lr=1000000.0" in blown

    report = (sweeps["activation"] / "report.md").read_text()
    assert "## Experiment `activation` (one factor)" in report
    assert "| activation | relu (base) |" in report and "| activation | tanh |" in report
    assert "status 'diverged' after" in report  # the epoch it stopped in depends on the trainer
    assert "no metrics.json" in report and "status 'interrupted'" in report
    pngs = sorted(path.name for path in sweeps["activation"].glob("*.png"))
    assert "curves_activation.png" in pngs and "best_worst.png" in pngs
    assert all((sweeps["activation"] / name).stat().st_size > 5000 for name in pngs)
    with (sweeps["activation"] / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["activation"] for row in rows] == ["relu", "tanh", "relu"]
    assert [row["n"] for row in rows] == ["2", "2", "0"]
    assert 0.0 <= float(rows[0]["test_acc_mean"]) <= 1.0 and rows[2]["test_acc_mean"] == ""


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing", "does not exist"),
        (lambda tmp: tmp, "No training runs found"),
        (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", "is not a directory"),
    ],
)
def test_report_refuses_bad_directories_with_one_paragraph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    assert main(["report", str(make(tmp_path))]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1 and captured.out == ""
    assert not (tmp_path / "report.md").exists()


# ---- the analysis, on runs written by hand -------------------------------------------------


def fake_run(
    directory: Path,
    seed: int,
    test_acc: float,
    recorded: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    **groups: str,
) -> None:
    """A run directory as train.py and Hydra leave it, with chosen numbers; its job number is its
    name's leading number, as in a sweep. `recorded` replaces metrics.json's values (status,
    warnings); `extra` adds config keys. With extra data.val_size=0 it has no validation: null val
    figures, none per epoch."""
    num = int(directory.name.split("_", 1)[0])
    chosen = {"activation": "relu", "pool": "max", "optimizer": "sgd", **groups}
    (directory / ".hydra").mkdir(parents=True)
    config = {
        "activation": {"name": chosen["activation"]},
        "pool": {"name": chosen["pool"]},
        "optimizer": {"name": chosen["optimizer"], "lr": 0.01 if chosen["optimizer"] == "sgd" else 0.001},
        "epochs": 3,
        "seed": seed,
        "threads": None,
        **(extra or {}),
    }
    (directory / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    hydra = {"hydra": {"job": {"num": num}, "runtime": {"choices": {**chosen, "experiment": "x"}}}}
    (directory / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    validated = validation.validates(config)
    history = [
        {"epoch": epoch, "train_acc": test_acc, "train_loss": 1.0 / epoch, "seconds": 2.0,
         **({"val_acc": test_acc * fraction, "val_loss": 1.0 / epoch} if validated else {})}
        for epoch, fraction in ((1, 0.5), (2, 0.995), (3, 1.0))
    ]  # fmt: skip
    metrics = {"status": "completed", "train_acc": test_acc, "val_acc": test_acc if validated else None,
               "val_loss": 0.3 if validated else None, "test_acc": test_acc, "test_loss": 0.3, "best_epoch": 3,
               "epochs_completed": 3, "warnings": [], "history": history, **(recorded or {})}  # fmt: skip
    if not validated:
        metrics["validation"] = validation.describe(0, 256)
    (directory / "metrics.json").write_text(json.dumps(metrics))


def test_factorial_main_effects_are_paired_over_the_other_factors_and_seeds(tmp_path: Path) -> None:
    # test_acc = 0.80 + 0.05 [tanh] - 0.02 [avg] + 0.001 * seed: the main effects are exact.
    num = 0
    for seed in (0, 1, 2):
        for activation in ("relu", "tanh"):
            for pool in ("max", "avg"):
                value = 0.80 + 0.05 * (activation == "tanh") - 0.02 * (pool == "avg") + 0.001 * seed
                fake_run(tmp_path / f"{num}_run", seed, value, activation=activation, pool=pool)
                num += 1
    found = runs.load_all([tmp_path])
    configs = configurations(found)
    result = analyse("x", configs, group_keys(found))
    assert result.design == "factorial" and result.factors == ["activation", "pool"]
    effects = {(c.factor, level.label): level.effects["test_acc"] for c in result.comparisons for level in c.levels[1:]}
    assert effects.keys() == {("activation", "tanh"), ("pool", "avg")}
    assert effects["activation", "tanh"].estimate == pytest.approx(0.05)
    assert effects["pool", "avg"].estimate == pytest.approx(-0.02)
    assert effects["pool", "avg"].low == pytest.approx(-0.02)  # no noise once paired


def test_one_factor_at_a_time_and_unfinished_runs(tmp_path: Path) -> None:
    num = 0
    for seed in (0, 1, 2):
        for groups, value in (({}, 0.90), ({"activation": "tanh"}, 0.88), ({"optimizer": "adam"}, 0.91)):
            fake_run(tmp_path / f"{num}_run", seed, value + 0.002 * seed, **groups)
            num += 1
    fake_run(tmp_path / f"{num}_run", 3, math.nan, {"status": "diverged"}, activation="tanh")
    found = runs.load_all([tmp_path])
    configs = configurations(found)
    result = analyse("x", configs, group_keys(found))
    assert result.design == "one factor at a time"
    by_factor = {comparison.factor: comparison for comparison in result.comparisons}
    assert [level.label for level in by_factor["activation"].levels] == ["relu", "tanh"]
    assert [level.label for level in by_factor["optimizer"].levels] == ["sgd", "adam"]
    tanh = by_factor["activation"].levels[1]
    assert len(tanh.runs) == 4 and len(tanh.completed) == 3  # the diverged run is counted, not averaged
    assert tanh.effects["test_acc"].estimate == pytest.approx(-0.02)
    assert configs[1].status_text() == "3 completed, 1 diverged"
    assert measures.run_metrics(found[0])["epochs_to_99"] == 2.0


def test_each_runs_figures_are_computed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tables, the paired effects of a factorial, the figures and the CSV all read each run's
    figures: measures.run_metrics runs once per run however many of them read it."""
    for num in range(8):
        activation, pool, seed = ("relu", "tanh")[num % 2], ("max", "avg")[num // 2 % 2], num // 4
        fake_run(tmp_path / f"{num}_run", seed, 0.8 + 0.001 * num, activation=activation, pool=pool)
    computed: Counter[str] = Counter()
    unpatched = measures.run_metrics

    def counted(run: runs.Run) -> dict[str, float]:
        computed[run.path.name] += 1
        return unpatched(run)

    monkeypatch.setattr(measures, "run_metrics", counted)
    assert main(["report", str(tmp_path)]) == 0
    assert "## Experiment `x` (factorial)" in (tmp_path / "report.md").read_text()
    assert computed == Counter({f"{num}_run": 1 for num in range(8)})


def test_runs_with_warnings_are_marked_and_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_run(tmp_path / "0_run", 0, 0.9)
    fake_run(tmp_path / "1_run", 1, 0.1, {"warnings": ["Not learning: at chance."]})
    assert main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| 2 completed (1 with warnings) |" in printed
    assert "1 run(s) carry warnings" in printed
    report = (tmp_path / "report.md").read_text()
    section = report.split("## Runs with warnings", 1)[1]
    assert "| 1_run | Not learning: at chance. |" in section and "0_run" not in section


def test_t_quantiles_and_welch_interval_match_tables() -> None:
    for df, expected in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (120, 1.9799)):
        assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert stats.t_quantile(0.025, 3) == pytest.approx(-3.1824, abs=1e-4)
    interval = stats.welch_interval([1.0, 2.0, 3.0], [1.0, 1.0, 4.0])
    # Welch: diff 0, se^2 = 1/3 + 3/3, df = (4/3)^2 / ((1/3)^2/2 + 1^2/2) = 3.2.
    assert interval.estimate == pytest.approx(0.0)
    assert interval.df == pytest.approx(3.2)
    assert interval.high == pytest.approx(stats.t_quantile(0.975, 3.2) * math.sqrt(4 / 3))
    assert not stats.welch_interval([1.0], [1.0, 2.0]).defined


# (t, df): ordinary p-values, a fractional df (Welch), a tiny t, and far tails that `2 (1 - CDF)` loses.
T_CASES = [
    (0.0, 5), (1e-8, 3), (0.1, 3), (-2.0, 3), (1.0, 1), (2.5, 4.7), (3.464, 2), (2.228, 10), (7.0, 0.5),
    (5.0, 1000), (30.0, 3.2), (100.0, 10), (40.0, 30), (50.0, 100), (1e3, 2), (1e6, 1),
]  # fmt: skip


@pytest.mark.parametrize(("t", "df"), T_CASES)
def test_two_sided_p_matches_scipy_to_the_far_tails(t: float, df: float) -> None:
    scipy_t = pytest.importorskip("scipy.stats").t
    assert stats.two_sided_p(t, df) == pytest.approx(2.0 * scipy_t.sf(abs(t), df), rel=1e-12, abs=0.0)


def test_two_sided_p_without_scipy() -> None:
    # Closed forms: at 1 df (Cauchy) p = (2 / pi) atan(1 / |t|); at 2 df p = 1 - |t| / sqrt(2 + t^2).
    assert stats.two_sided_p(1.0, 1) == pytest.approx(0.5, rel=1e-14)
    assert stats.two_sided_p(1e6, 1) == pytest.approx(2.0 / math.pi * math.atan(1e-6), rel=1e-12)
    root = math.sqrt(2.0 + 1e6)  # 1 - 1e3 / root without its cancellation
    assert stats.two_sided_p(1e3, 2) == pytest.approx(2.0 / (root * (root + 1e3)), rel=1e-12)
    assert stats.two_sided_p(-1e3, 2) == stats.two_sided_p(1e3, 2)
    assert stats.two_sided_p(2.228, 10) == pytest.approx(0.05, abs=1e-4)  # the tables' t(0.975, 10)
    assert stats.two_sided_p(40.0, 30) == pytest.approx(1.3726045194406e-27, rel=1e-12)  # was 0.0
    assert stats.two_sided_p(0.0, 3) == 1.0 and stats.two_sided_p(math.inf, 3) == 0.0
    # An interval's p is that p: t of about 1.7e9 at 2 df, 3e-19, no longer rounded to 0.
    assert 0.0 < stats.paired_interval([1.0, 1.0 + 1e-9, 1.0 - 1e-9]).p < 1e-17


def test_holm_adjusts_step_down_and_keeps_order() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, then 0.04 raised to 0.06.
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert stats.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_effects_carry_raw_and_holm_adjusted_p_values(tmp_path: Path) -> None:
    # Paired differences 1, 2, 3: t = 2 / (1 / sqrt 3) = 3.464 with 2 df, two-sided p = 0.0742.
    assert stats.paired_interval([1.0, 2.0, 3.0]).p == pytest.approx(0.0742, abs=1e-4)
    num = 0
    for seed in (0, 1, 2):
        for groups, value in (({}, 0.90), ({"activation": "tanh"}, 0.88), ({"optimizer": "adam"}, 0.9005)):
            fake_run(tmp_path / f"{num}_run", seed, value + 0.002 * seed**2, **groups)
            num += 1
    found = runs.load_all([tmp_path])
    result = adjust_for_multiplicity(analyse("x", configurations(found), group_keys(found)))
    levels = [level for comparison in result.comparisons for level in comparison.levels[1:]]
    raw = [level.effects["test_acc"].p for level in levels]
    assert [level.holm["test_acc"] for level in levels] == pytest.approx(stats.holm(raw))
    assert min(raw) < 0.05 and max(raw) > 0.5  # tanh's -0.02 stands out, adam's +0.0005 does not
    table = tables.effects_table(result.comparisons)
    assert "| Holm p |" in table and f"{stats.holm(raw)[raw.index(min(raw))]:.3f} *" in table


# ---- runs without validation (data.val_size=0) ------------------------------------------------


def final_fits_and_held_out(directory: Path) -> None:
    """One experiment, one factor: data.val_size 10 (validated, the base) or 0 (a final fit on all
    images), three seeds each; the final fits test 0.01 better."""
    for num, (seed, val_size) in enumerate((seed, size) for seed in (0, 1, 2) for size in (10, 0)):
        value = 0.80 + 0.01 * (val_size == 0) + 0.002 * seed
        fake_run(directory / f"{num}_run", seed, value, extra={"data": {"val_size": val_size}})


def test_runs_without_validation_read_n_a_and_are_never_averaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    final_fits_and_held_out(tmp_path)
    found = runs.load_all([tmp_path])
    configs = configurations(found)
    held_out, final_fit = configs
    assert held_out.validated and not final_fit.validated
    assert final_fit.values("val_acc") == [] and final_fit.values("epochs_to_99") == []
    assert final_fit.values("test_acc") == pytest.approx([0.81, 0.812, 0.814])
    assert main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "3 run(s) had no validation (data.val_size=0): their validation figures read n/a" in printed
    table = tables.configurations_table(analysis.build([tmp_path], config_dir()))
    header, _, base_row, fit_row = table.splitlines()
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    fit = dict(zip(columns, (cell.strip() for cell in fit_row.strip("|").split("|")), strict=True))
    base = dict(zip(columns, (cell.strip() for cell in base_row.strip("|").split("|")), strict=True))
    assert (fit["val acc"], fit["epochs to 99% val"]) == ("n/a", "n/a")
    assert fit["test acc"] == "0.8120 ± 0.0020" and fit["best epoch"] == "3.0 ± 0.0"
    assert base["val acc"] == "0.8020 ± 0.0020" and base["epochs to 99% val"] == "2.0 ± 0.0"
    report = (tmp_path / "report.md").read_text()
    effects = report.split("## Experiment `x` (one factor)", 1)[1].split("##", 1)[0]
    (level,) = [line for line in effects.splitlines() if line.startswith("| data |") and "(base)" not in line]
    cells = [cell.strip() for cell in level.strip("|").split("|")]
    # test acc: its effect stands (Welch: ± t(0.975, 4) * sqrt(2 * 0.002^2 / 3) = ± 0.0045)
    assert cells[4:6] == ["0.8120 ± 0.0020", "+0.0100 [+0.0055, +0.0145]"]
    assert cells[8:] == ["n/a"] * 4  # val acc: no figure, no effect, no p-value
    section = report.split("## Runs without validation", 1)[1]
    assert "3 run(s) trained with data.val_size=0" in section
    assert sorted(line for line in section.splitlines() if line.startswith("- ")) == ["- 1_run", "- 3_run", "- 5_run"]


def test_the_curves_say_which_level_had_no_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final_fits_and_held_out(tmp_path)
    configs = configurations(runs.load_all([tmp_path]))
    drawn: list[Any] = []
    monkeypatch.setattr(figures, "_save", lambda figure, path: drawn.append(figure) or path)
    figures.level_curves(
        tmp_path / "curves.png", "t", [(str(index), config.completed) for index, config in enumerate(configs)]
    )
    legend = [text.get_text() for text in drawn[0].axes[0].get_legend().get_texts()]
    assert legend == ["0 (n=3)", "1 (n=3, no validation: data.val_size=0)"]
    assert len(drawn[0].axes[0].lines) == 2  # one curve; the other level's entry has no data
    assert len(drawn[0].axes[0].lines[1].get_xdata()) == 0


def test_an_option_whose_values_a_run_changed_is_marked_with_the_values(tmp_path: Path) -> None:
    """An experiment file may choose an option and set values of its own (experiment=best chooses
    `dropout: none` and sets p): the column must not name the option alone."""
    fake_run(tmp_path / "0_sgd", 0, 0.80)
    fake_run(tmp_path / "1_faster", 0, 0.81, extra={"optimizer": {"name": "sgd", "lr": 0.1}})
    found = runs.load_all([tmp_path])
    configs, groups = configurations(found), group_keys(found)
    label(configs, groups, config_dir())  # conf/optimizer/sgd.yaml: lr 0.01
    assert [config.labels["optimizer"] for config in configs] == ["sgd", "sgd (changed)"]
    assert [config.labels["settings"] for config in configs] == ["", "optimizer.lr=0.1"]
    (alone,) = configurations(runs.load_all([tmp_path / "1_faster"]))
    label([alone], groups, config_dir())  # no other configuration to stand out from
    assert (alone.labels["optimizer"], alone.labels["settings"]) == ("sgd (changed)", "optimizer.lr=0.1")


def test_a_gpu_run_and_a_cpu_run_of_one_seed_are_two_configurations(tmp_path: Path) -> None:
    """A GPU computes other bits than a CPU: the same config and seed on each are two runs of two
    configurations, not one seed run twice."""
    fake_run(tmp_path / "0_cpu", 0, 0.80)
    fake_run(tmp_path / "1_gpu", 0, 0.81)
    metrics = json.loads((tmp_path / "1_gpu" / "metrics.json").read_text())
    (tmp_path / "1_gpu" / "metrics.json").write_text(json.dumps({**metrics, "device": "cuda:1"}))
    configs = configurations(runs.load_all([tmp_path]))
    assert [[run.path.name for run in config.runs] for config in configs] == [["0_cpu"], ["1_gpu"]]
    assert duplicates(configs) == []
    fake_run(tmp_path / "2_cpu_again", 0, 0.80)  # control: the same seed on the CPU twice is a duplicate
    assert len(duplicates(configurations(runs.load_all([tmp_path])))) == 1


# ---- the report's own dependencies -------------------------------------------------------------


def imported_modules(path: Path) -> list[str]:
    """Every module a source file imports, at its top or inside a function."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
    return names


def test_the_report_imports_nothing_of_the_training_side() -> None:
    """The report reads run directories: it needs neither torch nor the training and search glue
    (lenet_fmnist.launch, lenet_fmnist.training), not even inside a function."""
    forbidden = ("torch", "torchvision", "lenet_fmnist.launch", "lenet_fmnist.training")
    found = [
        f"{path.name}: {name}"
        for path in sorted(Path(writer.__file__).parent.glob("*.py"))
        for name in imported_modules(path)
        if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden)
    ]
    assert found == []


def test_a_search_directory_without_the_sweeper_is_one_paragraph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweeper's package is optional: a search directory's summary then asks for it, once
    report.md is written."""
    fake_run(tmp_path / "0_run", 0, 0.9)
    (tmp_path / SEARCH_FILE).write_text("{}")
    monkeypatch.setitem(sys.modules, "optuna_pruning_sweeper", None)  # as if not installed
    assert main(["report", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "holds a hyperparameter search; its summary needs the sweeper: pip install" in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert (tmp_path / "report.md").is_file()


def test_the_sweepers_refusal_reads_as_one_paragraph(tmp_path: Path) -> None:
    pytest.importorskip("optuna_pruning_sweeper.summary", reason="needs the sweeper (the `search` extra)")
    with pytest.raises(UserError, match=r"holds no search\.json: it is not a search directory") as raised:
        search_summary.write(tmp_path)
    assert raised.value.__suppress_context__ and "\n" not in str(raised.value)
