"""A tiny campaign config for tests: 12 + 12 networks, batch 4, Gaussian images, a few terminals;
a made-up ground-truth table that lacks a dataset."""
from pathlib import Path

import pytest

from evaluation.errors import ZcpError
from evaluation.groundtruth import TABLE_COLUMNS
from evaluation.spaces import get_space
from experiments.config import parse_config

TINY = """
[campaign]
space = "{space}"
datasets = ["cifar10"]
[sample]
search_n = 12
heldout_n = 12
[cache]
batch_size = 4
images = "gaussian"
terminals = {terminals}
dir = "{cache_dir}"
[gp]
population = {population}
generations = {generations}
[parallel]
backend = "{backend}"
"""
TERMS = '["params", "flops", "code_kernel", "chan_corr_eig", "act_std", "snip"]'


def tiny_config(folder: Path, cache_dir: Path, generations: int = 4, backend: str = "serial",
                population: int = 24, space: str = "tss") -> Path:
    """Write the tiny config as ``folder/c.toml`` (caches in ``cache_dir``) and return its path."""
    path = folder / "c.toml"
    path.write_text(TINY.format(terminals=TERMS, cache_dir=cache_dir, generations=generations, backend=backend,
                                population=population, space=space))
    return path


def write_table_without(path: Path, space: str, dataset: str) -> Path:
    """A complete ground-truth table of ``space`` (made-up numbers) whose ``dataset`` columns are empty."""
    searchspace = get_space(space)
    cells = ["" if column.startswith(dataset + "_") else "50.0" for column in TABLE_COLUMNS[2:]]
    rows = [",".join([str(i), searchspace.arch_str(i), *cells]) for i in range(searchspace.size)]
    path.write_text("\n".join([",".join(TABLE_COLUMNS), *rows]) + "\n")
    return path


def without_progress(err: str) -> str:
    """stderr of a campaign less its per-phase progress lines (printed when stderr is not a terminal), so
    tests can check that a failure adds exactly one line."""
    keep = ("zcp: error:", "zcp: warning:", "zcp: interrupted")
    return "".join(line for line in err.splitlines(keepends=True)
                   if not line.startswith("zcp: ") or line.startswith(keep))


def assert_one_line_config_error(text: str, match: str) -> None:
    """Parsing the config ``text`` fails with a ZcpError matching ``match``, in one line."""
    with pytest.raises(ZcpError, match=match) as info:
        parse_config(text)
    assert "\n" not in str(info.value)


def interrupt_at(monkeypatch: pytest.MonkeyPatch, engine: type, generation: int) -> None:
    """Make ``engine.step`` raise KeyboardInterrupt (a user's Ctrl-C) once the run reaches ``generation``;
    ``monkeypatch.undo()`` restores it for the resume."""
    real = engine.step

    def step(self):
        if self.generation == generation:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(engine, "step", step)
