"""Mutation score of the core modules: mutmut, each module against its own tests.

A benchmark, not a test (``make mutate``). For every module below, mutmut
(3.x, pinned in constraints.txt) makes small deliberate bugs in its functions
(``<`` → ``<=``, ``+ 1`` → ``+ 2``, a dropped argument, ...) and runs the tests
aimed at that module against each one; a mutant the tests fail on is *killed*,
one they pass is a *survivor*: a behaviour no test pins down. Each run works in
its own scratch copy of ``pipelines/`` and ``tests/`` under ``.cache/mutate/``,
so the worktree is never edited.

The table gives killed / survived per module; every survivor is printed with
its diff. Survivors that cannot be killed because they do not change behaviour
(equivalent mutants) are listed in ``bench/equivalent_mutants.csv``, one row per
mutant: ``module`` (dotted, as mutmut names it), ``mutant`` (mutmut's name inside
that module) and ``why`` no test can tell it from the original. This script reads
that file and counts those survivors apart (docs/testing.md).

    python bench/mutate.py                      # every module (about 35 min on 2 cores)
    python bench/mutate.py --only io privacy    # some of them
    python bench/mutate.py --children 1         # one test process at a time
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".cache" / "mutate"
EQUIVALENT = ROOT / "bench" / "equivalent_mutants.csv"

# mutmut's exit-code verdicts, grouped as this table counts them: a timeout or a crash
# means the tests noticed the bug; "no tests" means no test of the module runs the function
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
SURVIVED = {"survived", "no tests", "suspicious"}


@dataclass(frozen=True)
class Run:
    """One mutmut run: the modules it mutates and the tests aimed at them."""

    name: str
    modules: tuple[str, ...]
    tests: tuple[str, ...]
    # mutant-name globs to run and count (all of the modules' mutants when empty)
    include: tuple[str, ...] = ()
    # extra pytest arguments for every test run of this module (e.g. a deselected test)
    pytest_args: tuple[str, ...] = ()
    # "fork": each mutant forked from the process that traced the tests, its tests run
    # fastest first (2-10x quicker here; with one OpenMP thread torch survives the fork:
    # both modes gave the same verdicts on the 157 mutants of ranking and io, and sasrec
    # under fork had no timeout or crash); "forkserver": a clean process, tests unordered
    isolation: str = "fork"


VALIDATE_TESTS = "tests/data/test_validate.py"
FUSION_TESTS = "tests/models/test_fusion_transformer.py"
RUNS: tuple[Run, ...] = (
    Run(
        "metrics",
        ("pipelines/evaluation/metrics.py",),
        ("tests/evaluation/test_metrics.py", "tests/evaluation/test_coldstart.py"),
    ),
    Run(
        "ranking",
        ("pipelines/evaluation/ranking.py",),
        ("tests/evaluation/test_ranking.py", "tests/stages/test_evaluate_select.py"),
    ),
    Run("split", ("pipelines/data/split.py",), ("tests/data/test_split.py",)),
    Run("privacy", ("pipelines/data/privacy.py",), ("tests/data/test_privacy.py",)),
    Run(
        "validation",
        ("pipelines/data/contract.py", "pipelines/data/validate.py"),
        ("tests/data/test_contract.py", VALIDATE_TESTS),
        pytest_args=(
            # a timing test: 10 s per mutant, and every row rule it runs is tested on its own
            "--deselect",
            f"{VALIDATE_TESTS}::test_validating_100k_rows_takes_seconds",
            # imported once in the process every mutant is forked from, not once per mutant
            # (validate imports it lazily; it takes seconds)
            "-p",
            "great_expectations",
        ),
    ),
    Run(
        "sequences",
        ("pipelines/features/sequences.py",),
        (
            "tests/features/test_sequences.py",
            "tests/training/test_leaks.py",
            "tests/evaluation/test_coldstart.py",
        ),
    ),
    Run("io", ("pipelines/core/io.py",), ("tests/code/test_io.py",)),
    Run(
        "baselines",
        (
            "pipelines/models/popularity.py",
            "pipelines/models/itemknn.py",
            "pipelines/models/ease.py",
        ),
        ("tests/models/test_baselines.py",),
    ),
    Run("sasrec", ("pipelines/models/sasrec.py",), ("tests/models/test_sasrec.py",)),
    Run(
        "fusion",
        ("pipelines/models/fusion_transformer.py",),
        (FUSION_TESTS,),
        # every part but LoraText: the LoRA encoder is the GPU training path, not scoring;
        # its one CPU test loads MiniLM (5 s) and is left out here for the same reason
        pytest_args=(
            "--deselect",
            f"{FUSION_TESTS}::test_lora_mode_trains_only_adapters_and_round_trips",
        ),
        include=(
            "pipelines.models.fusion_transformer.x_*",
            *(
                f"pipelines.models.fusion_transformer.xǁ{part}ǁ*"
                for part in (
                    "FusionConfig",
                    "FrozenText",
                    "WhiteningMoE",
                    "ItemTower",
                    "TimeBiasedAttention",
                    "Block",
                    "FusionTransformer",
                )
            ),
        ),
    ),
)


def module_of(mutant: str) -> str:
    """'pipelines.core.io.x_write_json__mutmut_3' -> 'pipelines/core/io.py'."""
    dotted = mutant.rsplit(".", 1)[0]
    return dotted.replace(".", "/") + ".py"


EQUIVALENT_COLUMNS = ["module", "mutant", "why"]
MUTANT_NAME = re.compile(r"x.+__mutmut_\d+")


def equivalent_mutants(path: Path = EQUIVALENT) -> set[str]:
    """The mutants ``path`` declares equivalent, by full name (``pipelines.core.io.x_f__mutmut_4``).

    A CSV with the header ``module,mutant,why`` and one row per mutant; a row that is not
    a ``pipelines.`` module, a mutmut name and a reason is refused with its line number.
    """
    names: set[str] = set()
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != EQUIVALENT_COLUMNS:
            raise ValueError(f"{path}: the header must be {','.join(EQUIVALENT_COLUMNS)}")
        for row in reader:
            module, mutant, why = (row[c] or "" for c in EQUIVALENT_COLUMNS)
            if not (
                module.startswith("pipelines.") and MUTANT_NAME.fullmatch(mutant) and why.strip()
            ):
                raise ValueError(f"{path}, line {reader.line_num}: expected module,mutant,why")
            names.add(f"{module}.{mutant}")
    return names


def mutmut_config(run: Run) -> str:
    """The [tool.mutmut] table of one run (mutmut reads it from the copy's pyproject.toml)."""

    def toml_list(values: tuple[str, ...] | list[str]) -> str:
        return "[" + ", ".join(json.dumps(v) for v in values) + "]"

    return "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["pipelines"]',
            f"only_mutate = {toml_list(run.modules)}",
            f"pytest_add_cli_args_test_selection = {toml_list(run.tests)}",
            # a fixed test order, and no cache files written into the copy
            "pytest_add_cli_args = "
            + toml_list(["-p", "no:randomly", "-p", "no:cacheprovider", *run.pytest_args]),
            f'process_isolation = "{run.isolation}"',
            "use_git_change_detection = false",
            "",
        ]
    )


def prepare(run: Run, folder: Path) -> None:
    """A fresh scratch copy of the code and tests with this run's mutmut config."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pipelines", "tests"):
        shutil.copytree(ROOT / name, folder / name, ignore=ignore)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (folder / "pyproject.toml").write_text(pyproject + mutmut_config(run), encoding="utf-8")


def verdicts(folder: Path) -> dict[str, str]:
    """Every mutant's verdict, read from the .meta files mutmut leaves beside each module."""
    from mutmut.stats import status_by_exit_code

    found: dict[str, str] = {}
    for meta in (folder / "mutants").rglob("*.py.meta"):
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        found |= {name: status_by_exit_code[code] for name, code in codes.items()}
    return found


DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
print(json.dumps({name: get_diff_for_mutant(name) for name in sys.argv[1:]}))
"""


def diffs(folder: Path, names: list[str]) -> dict[str, str]:
    """Each mutant's diff against the original function (mutmut's own rendering)."""
    if not names:
        return {}
    done = subprocess.run(
        [sys.executable, "-c", DIFFS, *names], cwd=folder, capture_output=True, text=True
    )
    if done.returncode != 0:
        return {name: f"(no diff: {done.stderr.strip().splitlines()[-1:]})" for name in names}
    return json.loads(done.stdout)


def changed_lines(diff: str) -> list[str]:
    return [
        line
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def refresh_tests(folder: Path) -> None:
    """The current tests into an existing copy (mutmut never overwrites its copy)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for target in (folder / "tests", folder / "mutants" / "tests"):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ROOT / "tests", target, ignore=ignore)
    # which test runs which function is traced again, so new and edited tests count
    (folder / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)


def execute(run: Run, children: int, log: Path, again: list[str] | None = None) -> float:
    """mutmut run in the run's scratch copy; returns the seconds it took.

    ``again`` re-checks only those mutants of the previous run, against the current tests.
    """
    folder = WORK / run.name
    if again is None:
        prepare(run, folder)
    else:
        refresh_tests(folder)
    env = {
        **os.environ,
        # tiny test models run fastest on one thread, and 2 children share 2 cores
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GX_ANALYTICS_ENABLED": "false",
    }
    mutmut = Path(sys.executable).parent / "mutmut"
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        done = subprocess.run(
            [str(mutmut), "run", "--max-children", str(children), *(again or run.include)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise SystemExit(f"mutmut failed for {run.name} (exit {done.returncode}):\n{tail}")
    return time.perf_counter() - started


def included(run: Run, name: str) -> bool:
    return not run.include or any(fnmatch(name, pattern) for pattern in run.include)


def survivors_of(run: Run) -> list[str]:
    """The surviving mutants of the run's last full run (it must have been run before)."""
    folder = WORK / run.name
    if not (folder / "mutants").is_dir():
        raise SystemExit(f"--survivors: {run.name} has no earlier run in {folder}")
    return sorted(
        name
        for name, status in verdicts(folder).items()
        if status in SURVIVED and included(run, name)
    )


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def row(label: str, counts: Counter[str]) -> list[str]:
    total, killed, same = counts["total"], counts["killed"], counts["equivalent"]
    percent = f"{100 * killed / total:.1f}" if total else "-"
    score = f"{100 * killed / (total - same):.1f}" if total > same else "-"
    counted = (str(counts[k]) for k in ("killed", "survived", "equivalent", "total"))
    return [label, *counted, percent, score]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[run.name for run in RUNS], default=None)
    parser.add_argument("--children", type=int, default=2, help="test processes at once")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="re-check only the last run's survivors against the current tests (quick, while "
        "writing tests; the numbers to report come from a full run)",
    )
    args = parser.parse_args(argv)

    runs = [run for run in RUNS if args.only is None or run.name in args.only]
    equivalent = equivalent_mutants()
    WORK.mkdir(parents=True, exist_ok=True)
    rows, survivors, seconds = [], [], {}
    totals: Counter[str] = Counter()
    started = time.perf_counter()
    for run in runs:
        log = WORK / f"{run.name}.log"
        print(f"mutating {', '.join(run.modules)} against {', '.join(run.tests)} ...", flush=True)
        again = None
        if args.survivors:
            again = survivors_of(run)
            if not again:
                print("  no survivors to re-check")
        if again == []:
            seconds[run.name] = 0.0
        else:
            seconds[run.name] = execute(run, args.children, log, again)
        found = {
            name: status
            for name, status in verdicts(WORK / run.name).items()
            if included(run, name)
        }
        left = [n for n, s in found.items() if s in SURVIVED]
        changes = diffs(WORK / run.name, sorted(left))
        for module in run.modules:
            mine = {n: s for n, s in found.items() if module_of(n) == module}
            unknown = sorted({s for s in mine.values()} - KILLED - SURVIVED)
            if unknown:
                raise SystemExit(f"{module}: mutants left unchecked ({unknown}); see {log}")
            killed = sum(s in KILLED for s in mine.values())
            lost = sorted(n for n, s in mine.items() if s in SURVIVED)
            same = [n for n in lost if n in equivalent]
            counts = Counter(
                killed=killed, survived=len(lost) - len(same), equivalent=len(same), total=len(mine)
            )
            totals += counts
            rows.append(row(module, counts))
            survivors += [(n, mine[n], n in equivalent, changes.get(n, "")) for n in lost]
        print(f"  done in {seconds[run.name]:.0f} s", flush=True)

    elapsed = time.perf_counter() - started
    rows.append(row("**all**", totals))
    print()
    header = ["module", "killed", "survived", "equivalent", "total", "killed %", "score"]
    print(table(rows, header))
    print(
        "\nkilled % = killed / total; score = killed / (total - equivalent), the usual "
        "mutation score (equivalent mutants: bench/equivalent_mutants.csv)."
    )
    print(f"\n{totals['total']} mutants in {elapsed / 60:.1f} min", end="")
    print(" (" + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items()) + ")")
    print("\n### survivors\n")
    for name, status, same, diff in survivors:
        tag = "equivalent (listed)" if same else status
        print(f"- {name} [{tag}]")
        for line in changed_lines(diff):
            print(f"      {line.strip()}")
    if not survivors:
        print("none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
