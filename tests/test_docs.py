"""README.md, docs/ and the plugins' READMEs: every relative link and `#anchor` resolves; and the
README stays short with its quick start first (a newcomer reads its two commands before anything).

Anchors follow GitHub's rule for a heading's id: its text lowercased, markup removed, every
character that is not a letter, a digit, a space, '-' or '_' dropped, spaces made '-', and a
repeated id numbered (-1, -2, ...). Links inside code (fenced blocks and `spans`) are not links.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The plugins' READMEs too: README.md and docs/ link into them, and they may link back.
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("plugins/*/README.md"))]
README_MAX_LINES = 250
QUICK_START_WITHIN = 40  # the quick start's commands end within README's first lines

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"`+[^`]*`+")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_LINK_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    lines, in_fence = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's id for a heading's text (before numbering repeats)."""
    text = _INLINE_LINK_TEXT.sub(r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The ids of every heading in the Markdown file `path`, repeats numbered as GitHub does."""
    seen: Counter[str] = Counter()
    ids = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        ids.add(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    return ids


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link and image in `path`'s prose; a link's text may
    run over a line break, as a reflowed paragraph's does."""
    text = path.read_text(encoding="utf-8")
    prose = dict(prose_lines(text))
    blanked = "\n".join(_CODE_SPAN.sub("", prose.get(number, "")) for number in range(1, len(text.splitlines()) + 1))
    return [(blanked.count("\n", 0, match.start()) + 1, match.group(1)) for match in _LINK.finditer(blanked)]


def broken_links(path: Path) -> list[str]:
    """`path:line: target (why)` for each relative link of `path` whose file or `#anchor` is missing."""
    broken = []
    for number, target in links(path):
        if _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{path.name}:{number}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{path.name}:{number}: {target} (no heading #{anchor} in {linked.name})")
    return broken


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_the_checker_reports_missing_files_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A run's `metrics.json`, explained\n\n## Other\n")
    (tmp_path / "docs" / "figure.png").write_bytes(b"")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n"
        "## Exit statuses\n\n"
        "[fine](other.md#a-runs-metricsjson-explained) [repeat](other.md#other-1) [here](#exit-statuses)\n"
        "![figure](figure.png) [web](https://example.org/missing.md) [up](../docs/other.md)\n"
        "[gone](missing.md) [no anchor](other.md#nowhere) [not here](#exit-status)\n"
        "`[in a span](missing-too.md)`\n\n"
        "```bash\n# a comment, not a heading\n[in a block](missing-three.md)\n```\n"
        "[block comment](#a-comment-not-a-heading) [a link over\ntwo lines](#exit-statuses) [another\none](#nope)\n"
    )
    assert broken_links(page) == [
        "page.md:7: missing.md (no such file)",
        "page.md:7: other.md#nowhere (no heading #nowhere in other.md)",
        "page.md:7: #exit-status (no heading #exit-status in page.md)",
        "page.md:14: #a-comment-not-a-heading (no heading #a-comment-not-a-heading in page.md)",
        "page.md:15: #nope (no heading #nope in page.md)",
    ]


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Interrupts, resume, mistakes and exit statuses", "interrupts-resume-mistakes-and-exit-statuses"),
        ("metrics.json", "metricsjson"),
        ("A training run's directory", "a-training-runs-directory"),
        ("Search: `experiment=search`, and the recipe it chose", "search-experimentsearch-and-the-recipe-it-chose"),
        ("snake_case and-dash", "snake_case-and-dash"),
        ("See [the page](docs/x.md) now", "see-the-page-now"),
        ("On a multi-GPU box", "on-a-multi-gpu-box"),
    ],
)
def test_slugs_follow_githubs_rule(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def _code_blocks_after(lines: list[str], heading: str) -> list[tuple[int, int, str]]:
    """(first line, last line, text) of the fenced code blocks in the section under `heading`."""
    start = lines.index(heading)
    blocks, opened = [], None
    for number, line in enumerate(lines[start + 1 :], start=start + 2):
        if line.startswith("## "):
            break
        if _FENCE.match(line):
            if opened is None:
                opened = number
            else:
                blocks.append((opened, number, "\n".join(lines[opened : number - 1])))
                opened = None
    return blocks


def test_readme_is_short_and_starts_with_the_quick_start() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"
    blocks = _code_blocks_after(lines, "## Quick start")
    main_job = next(block for block in blocks if "python -m lenet_fmnist train" in block[2])
    tests = next(block for block in blocks if "python -m pytest" in block[2])
    for first, last, text in (main_job, tests):
        assert last <= QUICK_START_WITHIN, f"the quick start's command at lines {first}-{last} is below line 40: {text}"
    assert "pip install '.[cluster]'" in main_job[2], "the main job installs the package as a user does"


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    """CI must run exactly what README tells a newcomer to run: its last command is README's."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks = _code_blocks_after(lines, "## Quick start")
    (tests,) = [text.strip() for _, _, text in blocks if "python -m pytest" in text]
    ci_commands = [
        line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert ci_commands[-1].strip() == tests


def layout_paths(text: str) -> list[str]:
    """The paths docs/development.md's layout names: on each line, the words before the first gap
    of two spaces; an indented line's are inside the last directory above it that is less indented."""
    paths: list[str] = []
    parents: list[tuple[int, str]] = []  # (indent, directory) of the enclosing directories
    for line in text.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        names = line.strip().split("  ")[0].split()
        parents = [(level, directory) for level, directory in parents if level < indent]
        base = parents[-1][1] if parents else ""
        paths += [base + name for name in names]
        if names[-1].endswith("/"):
            parents.append((indent, base + names[-1]))
    return paths


def test_every_path_of_the_layout_exists() -> None:
    """The layout in docs/development.md is the tree as it is: each module and directory it names."""
    lines = (ROOT / "docs" / "development.md").read_text(encoding="utf-8").splitlines()
    ((_, _, tree),) = _code_blocks_after(lines, "## Layout")
    named = layout_paths(tree)
    assert "src/lenet_fmnist/run/admission.py" in named and "conf/hydra/launcher/" in named
    missing = [path for path in named if not (ROOT / path).exists()]
    assert not missing, f"docs/development.md's layout names paths that do not exist: {missing}"
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "src" / "lenet_fmnist").rglob("*.py")}
    unlisted = sorted(
        module for module in modules
        if not module.endswith("__init__.py") and "/report/" not in module and module not in named
        and not module.endswith("__main__.py")
    )  # fmt: skip
    assert not unlisted, f"modules the layout does not name: {unlisted}"


_ROW = re.compile(r"^\| `([\w.]+)` \| ([^|]*) \|")


def documented_defaults(text: str) -> dict[str, str]:
    """`key: default` of every table row of docs/configuration.md written as `| \\`key\\` | default | ...`."""
    return {match.group(1): match.group(2).strip() for line in text.splitlines() if (match := _ROW.match(line))}


def as_written(value: object) -> str:
    """A composed config value as the docs' tables write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"`{value}`"
    return str(value)


def test_the_documented_defaults_are_conf_s() -> None:
    """docs/configuration.md repeats a training run's defaults in its tables: each must be conf/'s."""
    from lenet_fmnist.config import TrainConfig, compose, to_plain
    from lenet_fmnist.run.config_keys import flatten

    composed = flatten(to_plain(compose("train", schema=TrainConfig)))
    written = documented_defaults((ROOT / "docs" / "configuration.md").read_text(encoding="utf-8"))
    compared = {key: default for key, default in written.items() if key in composed}
    assert {"epochs", "shards", "data.val_size", "ema.decay", "distill.alpha"} <= compared.keys()
    wrong = {
        key: (default, as_written(composed[key]))
        for key, default in compared.items()
        if default != as_written(composed[key])
    }
    assert not wrong, f"docs/configuration.md's defaults (written, conf/'s): {wrong}"


_REPO_PATH = re.compile(r"`((?:src|scripts|conf|tests|plugins|docs)/[A-Za-z0-9_./-]+)`")


@pytest.mark.parametrize("path", [doc for doc in DOC_FILES if doc.name != "results.md"], ids=lambda p: p.name)
def test_every_repository_path_a_page_names_exists(path: Path) -> None:
    """A page that names `src/...`, `conf/...` or another path of the repository names one that is
    there (docs/results.md names the files of past commits, each with its commit)."""
    named = set(_REPO_PATH.findall(path.read_text(encoding="utf-8")))
    missing = sorted(name for name in named if not (ROOT / name.split("#")[0]).exists())
    assert not missing, f"{path.name} names paths that do not exist: {missing}"
