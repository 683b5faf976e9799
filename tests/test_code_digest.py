"""The digest of a module's code covers the project modules it imports, transitively, and nothing else."""
import sys

import pytest

from evaluation.cache import code_roots
from evaluation.code_digest import code_digest, project_modules

FILES = {
    "__init__.py": "",
    "proxy.py": "import math\nfrom zcpfake.helpers import norm\n\ndef score():\n    from zcpfake import late\n",
    "helpers.py": "from zcpfake.base import EPS\nnorm = 1\n",
    "base.py": "EPS = 1e-12\n",
    "late.py": "X = 1\n",
    "report.py": "from zcpfake.proxy import score\n",
}


@pytest.fixture()
def package(tmp_path, monkeypatch):
    root = tmp_path / "zcpfake"
    root.mkdir()
    for name, text in FILES.items():
        (root / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] == "zcpfake"]:
        monkeypatch.delitem(sys.modules, name)  # another test's package of that name
    code_digest.cache_clear()
    yield root
    code_digest.cache_clear()


def digest() -> str:
    code_digest.cache_clear()
    return code_digest("zcpfake.proxy", packages=("zcpfake",))


def test_the_closure_follows_imports_of_the_project_only(package):
    found = project_modules("zcpfake.proxy", packages=("zcpfake",))
    assert sorted(found) == ["zcpfake", "zcpfake.base", "zcpfake.helpers", "zcpfake.late", "zcpfake.proxy"]
    # a root outside the project (a user's own proxy module) counts itself, not what it imports
    assert sorted(project_modules("zcpfake.proxy", packages=("other",))) == ["zcpfake.proxy"]


@pytest.mark.parametrize("edited, changes", [("base.py", True), ("late.py", True), ("proxy.py", True),
                                             ("report.py", False)])
def test_editing_a_module_changes_the_digest_of_those_that_import_it(package, edited, changes):
    before = digest()
    (package / edited).write_text((package / edited).read_text() + "Y = 2\n")
    assert (digest() != before) is changes


def test_comments_docstrings_and_layout_are_not_code(package):
    before = digest()
    (package / "base.py").write_text('"""Constants."""\n# the floor of a division\nEPS = (\n    1e-12)\n')
    (package / "proxy.py").write_text(FILES["proxy.py"].replace("def score():\n", 'def score():\n    """Doc."""\n'))
    assert digest() == before
    (package / "base.py").write_text("EPS = 1e-10\n")
    assert digest() != before


def test_the_real_zoo_shares_its_helpers_not_the_cli():
    zico = project_modules("evaluation.proxies.zico")
    assert {"evaluation.proxies.base", "primitives.layers"} <= set(zico)
    assert not {"evaluation.scoring", "experiments.cli"} & set(zico)


@pytest.mark.parametrize("space, builder", [("tss", "evaluation.spaces.tss"), ("sss", "evaluation.spaces.sss"),
                                            ("nb101", "evaluation.spaces.nb101.network")])
def test_a_cache_covers_the_terminals_its_builder_and_the_images_not_other_spaces(space, builder):
    """Editing one space's builder leaves the caches of the others valid."""
    modules = set(project_modules(*code_roots(space)))
    assert {"primitives.passes", "primitives.layers", "evaluation.images", builder} <= modules
    others = {"evaluation.spaces.tss", "evaluation.spaces.sss", "evaluation.spaces.nb101"} - {builder.rsplit(".network")[0]}
    assert not others & modules and "evaluation.spaces" not in modules
