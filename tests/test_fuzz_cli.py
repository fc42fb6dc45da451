"""The fuzz campaign's surfaces through the real command line, a few inputs each, in subprocesses
(the in-process campaign is tests/test_fuzz.py): the inputs that once found bugs
(tests/fuzz/regressions/), given as a user gives them. Each ends with a documented exit status,
no traceback, one paragraph naming the bad input, and the user's files as they were."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLI, HYDRA_HINT, assert_clear_failure, output, snapshot
from fuzz.world import World

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]  # subprocesses, as conftest marks its `cli` fixtures' tests

REGRESSIONS = Path(__file__).parent / "fuzz" / "regressions"


def regression(target: str, name: str) -> bytes:
    """A kept failing input, without the choice byte a target puts first (which reader, which file)."""
    data = (REGRESSIONS / target / f"{name}.bin").read_bytes()
    return data[1:] if target in ("checkpoint", "idx") else data


def test_overrides_hydra_cannot_use(cli: CLI, fuzz_world: World, tmp_path: Path) -> None:
    result = cli.run(*fuzz_world.train_args(tmp_path / "run", "activation=5"))
    assert_clear_failure(
        result, r"Hydra cannot use this command line \(ValueError: Config group override .*activation=5"
    )
    assert HYDRA_HINT in output(result) and not (tmp_path / "run").exists()


def test_overrides_a_path_no_file_can_have(cli: CLI, fuzz_world: World, tmp_path: Path) -> None:
    result = cli.run(
        "eval", f"checkpoint={'9' * 400}", f"data.root={fuzz_world.data}", f"hydra.run.dir={tmp_path / 'e'}"
    )
    assert_clear_failure(result, r"checkpoint='9{400}' does not exist or is not a file")


def test_data_with_no_test_images(cli: CLI, fuzz_world: World, tmp_path: Path) -> None:
    root = Path(shutil.copytree(fuzz_world.data, tmp_path / "data"))
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    (root / "t10k-images-idx3-ubyte").write_bytes(regression("idx", "zero-test-images"))
    before = snapshot(root)
    result = cli.run(
        "eval", f"checkpoint={fuzz_world.checkpoint}", f"data.root={root}", f"hydra.run.dir={tmp_path / 'e'}"
    )
    assert_clear_failure(result, r"t10k-images-idx3-ubyte holds no images")
    assert snapshot(root) == before


def test_images_predict_skips_what_it_cannot_use_and_predicts_the_rest(
    cli: CLI, fuzz_world: World, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(fuzz_world.images / "item.png", folder / "good.png")
    for name in ("palette-without-palette", "long-thin-image", "webp-canvas-16-million-wide"):
        (folder / f"{name}.png").write_bytes(regression("image", name))
    before = snapshot(folder)
    result = cli.run(
        "predict",
        f"checkpoint={fuzz_world.checkpoint}",
        f"images={folder}",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'p'}",
    )
    text = output(result)
    assert result.returncode == 0 and "Traceback" not in text, text
    rows = (tmp_path / "p" / "predictions.csv").read_text().splitlines()[1:]
    skipped = (tmp_path / "p" / "skipped.csv").read_text()
    assert sorted(row.split(",")[0].rsplit("/", 1)[1] for row in rows) == ["good.png", "long-thin-image.png"]
    assert "no palette" in skipped and "too large to decode" in skipped
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    ("name", "pattern"), [("eval-nan-weights", "not finite"), ("eval-without-epoch", "no 'epoch'")]
)
def test_checkpoints_eval(cli: CLI, fuzz_world: World, tmp_path: Path, name: str, pattern: str) -> None:
    path = tmp_path / f"{name}.pt"
    path.write_bytes(regression("checkpoint", name))
    result = cli.run("eval", f"checkpoint={path}", f"data.root={fuzz_world.data}", f"hydra.run.dir={tmp_path / 'e'}")
    assert_clear_failure(result, rf"{path} .*{pattern}")
    assert not (tmp_path / "e" / "eval.json").exists()


def test_rundirs_report_and_resume_of_a_run_edited_by_hand(cli: CLI, fuzz_world: World, tmp_path: Path) -> None:
    run = Path(shutil.copytree(fuzz_world.run, tmp_path / "run"))
    (run / "metrics.json").write_bytes(regression("metrics", "report-history-str"))
    (run / "checkpoints" / "best.pt").unlink()
    reported = cli.run("report", str(run))
    assert reported.returncode == 0 and "Traceback" not in output(reported), output(reported)
    kept = snapshot(run, skip=lambda path: ".hydra" in path.parts or path.suffix in (".log", ".md", ".csv", ".png"))
    resumed = cli.run(*fuzz_world.train_args(run, "resume=true"))
    assert_clear_failure(resumed, r"resume=true, but .*best.pt is missing")
    assert (
        snapshot(run, skip=lambda path: ".hydra" in path.parts or path.suffix in (".log", ".md", ".csv", ".png"))
        == kept
    )


def test_sweeper_summary_of_a_damaged_search_json(fuzz_world: World, tmp_path: Path) -> None:
    search = Path(shutil.copytree(fuzz_world.search, tmp_path / "search"))
    (search / "search.json").write_text(json.dumps({"storage": 5, "study_name": "search"}))
    result = subprocess.run(
        [sys.executable, "-m", "optuna_pruning_sweeper.summary", str(search)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in output(result), output(result)
    assert output(result).strip().startswith(f"{search / 'search.json'} cannot be read (storage must be null or text")
    assert len(output(result).strip().splitlines()) == 1


def test_sweeper_a_storage_url_it_cannot_read(cli: CLI, fuzz_world: World, tmp_path: Path) -> None:
    sweep = tmp_path / "search"
    result = cli.run(
        "train", "-m", "experiment=search", "hydra.sweeper.storage='mysql+pymysql://user:secret@127.0.0.1:notaport/db'",
        f"data.root={fuzz_world.data}", "data.val_size=64", "device=cpu", "threads=1", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    text = output(result)
    assert result.returncode == 1 and "Traceback" not in text, text
    assert "hydra.sweeper.storage=mysql+pymysql://*** is not a database URL SQLAlchemy can read" in text
    assert "secret" not in text
    assert not list(sweep.rglob("metrics.json"))
