"""Hostile files: expression strings holding Python code are refused and never run; no user pickle is loaded.

A marker command hidden in an expression (``touch MARKER``) must never create its file. The source
scan checks that nothing in the package can turn text from a file into code: no eval / exec /
compile / __import__, no pickle / torch / marshal load, no ``allow_pickle=True``, no DEAP
``from_string`` (which evals), and one unpickler only, the restricted one of evaluation/images.py.
"""
import ast
import json
from pathlib import Path

import pytest

from evaluation.errors import ZcpError
from gp.config import GPConfig
from gp.engine import Evolution
from gp.halloffame import HallOfFame, canonical_form
from primitives.expression import parse
from primitives.functions import REGISTRY
from primitives.terminals import terminal_types

TYPES = terminal_types()
ROOT = Path(__file__).resolve().parent.parent
HOSTILE = [
    "__import__('os').system('touch MARKER')",
    "eval(\"__import__('os').system('touch MARKER')\")",
    "exec('import os; os.system(\"touch MARKER\")')",
    "layer_sum(snip) or __import__('os').system('touch MARKER')",
    "n_add(params, (lambda: __import__('os').system('touch MARKER'))())",
    "params.__class__.__mro__[1].__subclasses__()",
    "n_add(params, os.system)",
    "system('touch MARKER')",
]


def _state() -> dict:
    engine = Evolution(REGISTRY, TYPES, GPConfig(population=6, hall_of_fame=4, seed=3),
                       lambda texts: [float(len(t) % 7) / 7 for t in texts])
    engine.initialise()
    return json.loads(json.dumps(engine.state()))


@pytest.fixture
def marker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield tmp_path / "MARKER"
    assert not (tmp_path / "MARKER").exists(), "a command hidden in a file ran"


@pytest.mark.parametrize("text", HOSTILE)
def test_expression_strings_are_parsed_never_run(text, marker):
    with pytest.raises(ZcpError):
        parse(text, REGISTRY, TYPES)


@pytest.mark.parametrize("where", ["population", "hall_of_fame", "memo"])
@pytest.mark.parametrize("text", HOSTILE[:4])
def test_an_engine_state_holding_code_is_refused(where, text, marker):
    state = _state()
    if where == "population":
        state["population"][1] = text
    elif where == "hall_of_fame":
        state["hall_of_fame"][0]["expression"] = text
    else:
        state["memo"][text] = 0.5
    with pytest.raises(ZcpError):
        Evolution.from_state(state, REGISTRY, TYPES, GPConfig(population=6, hall_of_fame=4, seed=3), lambda t: [])


def test_a_hall_of_fame_holding_code_is_refused(marker):
    entry = {"expression": HOSTILE[0], "canonical": "params", "fitness": 0.9, "size": 1, "generation": 0}
    with pytest.raises(ZcpError):
        HallOfFame.from_state([entry], 4, lambda t: canonical_form(t, REGISTRY, TYPES))


def test_a_malformed_engine_state_is_one_line():
    state = _state()
    del state["random"]
    with pytest.raises(ZcpError, match="engine state is malformed \\(KeyError") as info:
        Evolution.from_state(state, REGISTRY, TYPES, GPConfig(population=6, hall_of_fame=4, seed=3), lambda t: [])
    assert "\n" not in str(info.value)


CODE_CALLS = {"eval", "exec", "compile", "__import__"}
LOADERS = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib", "torch", "yaml"}


def _findings(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in CODE_CALLS:
                found.append(f"{where} calls {f.id}")
            if isinstance(f, ast.Attribute) and f.attr in {"load", "loads", "open", "Unpickler"} \
                    and isinstance(f.value, ast.Name) and f.value.id in LOADERS:
                found.append(f"{where} calls {f.value.id}.{f.attr}")
            if isinstance(f, ast.Attribute) and f.attr == "from_string":
                found.append(f"{where} calls from_string (DEAP evals unknown tokens)")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{where} passes allow_pickle={ast.unparse(kw.value)}")
        if isinstance(node, ast.ClassDef) and any("Unpickler" in ast.unparse(b) for b in node.bases):
            found.append(f"{where} defines unpickler {node.name}")
    return found


def test_no_code_path_turns_file_content_into_code():
    files = [p for pkg in ("evaluation", "primitives", "gp", "experiments") for p in (ROOT / pkg).rglob("*.py")]
    assert len(files) > 20
    findings = [f for p in files for f in _findings(p)]
    without_lines = [f"{f.split(':')[0]} {f.split(' ', 1)[1]}" for f in findings]
    assert sorted(without_lines) == sorted(ALLOWED), findings


ALLOWED = [
    "evaluation/images.py defines unpickler _RestrictedUnpickler",  # admits containers, bytes, numpy only
    # the exporter's sympy child process: the parent pickles a sympy tree it built from a parsed
    # expression and reads the child's answer from a pipe; no file is unpickled
    "gp/export/simplify.py calls pickle.loads",
    "gp/export/simplify.py calls pickle.load",
    "gp/export/write.py calls compile",  # syntax check of generated source; compile() never runs it
]


def test_hostile_hall_of_fame_never_runs_through_export_or_load(tmp_path, monkeypatch):
    from experiments.cli import main
    from gp.export import load_proxy

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('[campaign]\nseed = 0\n[cache]\nsignal = "pseudo_ce"\n')
    payload = f"__import__('os').system('touch {marker}')"
    (run / "hall_of_fame.json").write_text(json.dumps({"status": "finished",
                                                       "entries": [{"expression": payload, "fitness": 0.9}]}))
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 2
    with pytest.raises(ZcpError):
        load_proxy(run)(None, None)
    assert not marker.exists()
