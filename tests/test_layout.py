"""The house rules of the source tree: which package may import which."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPLICATIONS = ("spark_jobs", "streaming", "webapp", "kafka_cluster_scripts")
TOP_FLOOR = "commands"


def imported_packages(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """For each module of ``package``: the top-level packages it imports (anywhere in it,
    function bodies included)."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(root))] = names
    return found


def offenders(package: str, forbidden: set[str], root: Path = ROOT) -> dict[str, set[str]]:
    return {
        module: names & forbidden
        for module, names in imported_packages(package, root).items()
        if names & forbidden
    }


def test_the_core_package_imports_no_application():
    assert offenders("discorecs", {*APPLICATIONS, TOP_FLOOR}) == {}


@pytest.mark.parametrize("application", APPLICATIONS)
def test_an_application_imports_only_the_core(application):
    others = {*APPLICATIONS, TOP_FLOOR} - {application}
    assert offenders(application, others) == {}


def test_the_rules_see_an_import_inside_a_function(tmp_path):
    """The check itself: a lazy import in a function body counts, a relative one is local."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "m.py").write_text(
        "from . import spark_jobs\n\ndef f():\n    from spark_jobs import nightly\n"
    )
    (package / "n.py").write_text("import streaming.job\n")
    assert offenders("pkg", {"spark_jobs"}, tmp_path) == {"pkg/m.py": {"spark_jobs"}}
    assert offenders("pkg", {"streaming"}, tmp_path) == {"pkg/n.py": {"streaming"}}


LONG_MODULE = 400
PACKAGES = ("commands", "discorecs", "cassandra_schema", *APPLICATIONS, "bench")


def test_a_long_module_says_at_its_top_why_it_is_one():
    """A newcomer should find their room: a module past ~400 lines is split by concern, or its
    docstring says why it stays one ("Why one module: ...")."""
    unexplained = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            if text.count("\n") > LONG_MODULE:
                docstring = ast.get_docstring(ast.parse(text)) or ""
                if "Why one module:" not in docstring:
                    unexplained.append(str(path.relative_to(ROOT)))
    assert unexplained == []
