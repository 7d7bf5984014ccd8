"""The package's shape, read from the source with `ast`: library errors stay in their adapters,
no import cycle, imports point down the layers (commands -> app -> pipeline / telemetry /
dead_letters -> mongo, kafka -> settings, errors, ops), no module takes another's private names,
app.py stays short enough to read as the worker's life, and the command line holds no domain logic.
The tests' shape too: no test takes another module's private name, and the fakes live in
tests/support alone, one of each."""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiokafka.errors
import bson.errors
import pymongo.errors
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "worker"
TESTS = ROOT / "tests"
SUPPORT = TESTS / "support"

ADAPTERS = ("worker.mongo", "worker.kafka")
"""The only packages that may see PyMongo's, BSON's and aiokafka's exceptions."""
LIBRARY_ERROR_MODULES = ("pymongo.errors", "bson.errors", "aiokafka.errors")

LAYERS: dict[str, int] = {
    "worker.__main__": 4,
    "worker.commands": 4,
    "worker.app": 3,
    "worker.startup": 3,
    "worker.pipeline": 2,
    "worker.telemetry": 2,
    # What app.py runs is made from Settings here, beside the parts it assembles.
    "worker.pipeline.assembly": 2,
    "worker.telemetry.assembly": 2,
    # Dead letters: written by the pipeline, read and replayed by `dlq replay`.
    "worker.dead_letters": 2,
    "worker.mongo": 1,
    "worker.kafka": 1,
    "worker.retry": 1,
    # Leaves of mongo/ the bottom layer may use: the collection names (settings' TTL keys) and
    # the URI check (PyMongo's parser; the settings model validates MONGODB_URI with it).
    "worker.mongo.collections": 0,
    "worker.mongo.uri": 0,
    "worker.settings": 0,
    "worker.settings_checks": 0,
    "worker.settings_typos": 0,
    "worker.errors": 0,
    "worker.ops": 0,
    # The lifespans' task helpers and the one signal handler import nothing of the worker.
    "worker.ops.tasks": 0,
    "worker.ops.signals": 0,
}
"""Each module's layer (the longest matching prefix wins); a module imports only its own layer or lower."""

APP_MAX_LINES = 200
"""worker/app.py is `serve` -> `run_worker` -> `run_redelivery`; builders and helpers live below it."""

PRIVATE_IMPORTS_ALLOWED = frozenset({
    # PyMongo's own checks of database names and URIs without a DNS lookup, which it does not make
    # public (worker/mongo/uri.py, not part of the change that added this rule): tighten once wrapped.
    ("worker.mongo.uri", "pymongo.database_shared._check_name"),
    ("worker.mongo.uri", "pymongo.uri_parser_shared._validate_uri"),
})  # fmt: skip
"""The private imports known when the rule came in: (importer, imported name)."""

TEST_PRIVATE_USES_ALLOWED: frozenset[tuple[str, str]] = frozenset()
"""The private names a test still takes from another module: (test module, name)."""
FAKE_PREFIX = "Fake"
"""A test double's name starts with it; the doubles live in tests/support/, one of each."""


@dataclass(frozen=True, slots=True)
class Import:
    importer: str
    imported: str
    line: int

    def where(self) -> str:
        return f"{self.importer}:{self.line}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def worker_modules() -> dict[str, ast.Module]:
    return {
        module_name(path): ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` except those under `if TYPE_CHECKING:` (function-local imports included)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield child
                yield from runtime_nodes(child)
            continue
        yield node
        yield from runtime_nodes(node)


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(module: str, tree: ast.Module, known: set[str], is_package: bool = False) -> Iterator[Import]:
    """The modules `module` imports at run time; `from a import b` is a.b when a.b is a module of `known`."""
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node, is_package)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield Import(module, submodule if submodule in known else source, node.lineno)


def import_graph() -> dict[str, list[Import]]:
    modules = worker_modules()
    known = set(modules)
    packages = {module_name(path) for path in PACKAGE.rglob("__init__.py")}
    return {
        name: [edge for edge in imports_of(name, tree, known, name in packages) if edge.imported in known]
        for name, tree in modules.items()
    }


COMMANDS = "worker.commands"
DRIVERS = ("pymongo", "bson", "aiokafka")
"""The servers' client libraries. A command only parses, calls the packages below it, and prints:
whatever handles a driver's objects (reading records, claiming documents, sending) lives there."""


def driver_imports(module: str, tree: ast.Module) -> Iterator[str]:
    """Where `module` imports a driver library, at run time or for type checking alike."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            sources = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            sources = [node.module or ""]
        else:
            continue
        for source in sources:
            if source.split(".")[0] in DRIVERS:
                yield f"{module}:{node.lineno} imports {source}"


def _in_adapter(module: str) -> bool:
    return any(module == adapter or module.startswith(f"{adapter}.") for adapter in ADAPTERS)


@functools.cache
def _library_error_names() -> frozenset[str]:
    """Exception classes of the libraries' error modules, less builtins' and the worker's own names."""
    names = {
        name
        for library in (pymongo.errors, bson.errors, aiokafka.errors)
        for name, value in vars(library).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    ours = {
        node.name
        for tree in worker_modules().values()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }
    return frozenset(names - ours - set(dir(builtins)))


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _caught(handler: ast.ExceptHandler) -> list[str]:
    if handler.type is None:
        return []
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return [_dotted(node) for node in types]


def library_error_uses(module: str, tree: ast.Module) -> Iterator[str]:
    """Where `module` imports a library's error module or catches one of its exceptions."""
    library_errors = _library_error_names()
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            sources = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or "", *(f"{node.module}.{alias.name}" for alias in node.names)]
            )
            for source in sources:
                if source in LIBRARY_ERROR_MODULES:
                    yield f"{module}:{node.lineno} imports {source}"
        elif isinstance(node, ast.ExceptHandler):
            for caught in _caught(node):
                library = caught.split(".")[0] in ("pymongo", "bson", "aiokafka")
                if library or caught.split(".")[-1] in library_errors:
                    yield f"{module}:{node.lineno} catches {caught}"


def find_cycles(graph: dict[str, list[Import]]) -> list[list[str]]:
    """One cycle (a list of modules, first repeated last) per strongly connected group of modules."""
    successors = {name: sorted({edge.imported for edge in edges}) for name, edges in graph.items()}
    cycles, done = [], set()
    for start in sorted(successors):
        if start in done:
            continue
        path = _path_back(successors, start)
        if path is not None:
            cycles.append(path)
            done.update(path)
    return cycles


def _path_back(successors: dict[str, list[str]], start: str) -> list[str] | None:
    """The shortest import chain from `start` back to itself (breadth first), or None."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for name in frontier:
            for successor in successors.get(name, []):
                if successor == start:
                    chain = [name]
                    while chain[-1] != start:
                        chain.append(parents[chain[-1]])
                    return [start, *reversed(chain[:-1]), start]
                if successor not in parents:
                    parents[successor] = name
                    following.append(successor)
        frontier = following
    return None


def layer_of(module: str) -> int:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(f"{prefix}.")]
    if not matches:
        raise AssertionError(f"{module} has no layer in LAYERS: add it")
    return LAYERS[max(matches, key=len)]


def upward_imports(graph: dict[str, list[Import]]) -> list[str]:
    return sorted(
        {
            f"{edge.where()} imports {edge.imported} (layer {layer_of(edge.imported)} > {layer_of(name)})"
            for name, edges in graph.items()
            for edge in edges
            if layer_of(edge.imported) > layer_of(name)
        }
    )


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(module: str, tree: ast.Module, is_package: bool = False) -> Iterator[Import]:
    """Where `module` takes another module's private name: `from x import _y` or `import x._y`
    (TYPE_CHECKING-only imports too: the name is still another module's)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(module, node, is_package)
            for alias in node.names:
                if _is_private(alias.name):
                    yield Import(module, f"{source}.{alias.name}", node.lineno)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(_is_private(part) for part in alias.name.split(".")):
                    yield Import(module, alias.name, node.lineno)


@functools.cache
def modules_of_tests() -> dict[str, tuple[Path, ast.Module]]:
    """Every module under tests/, by name: its path and its syntax tree."""
    return {
        module_name(path): (path, ast.parse(path.read_text(), str(path))) for path in sorted(TESTS.rglob("*.py"))
    }


@functools.cache
def is_module(name: str) -> bool:
    """Whether `name` is a module or package (of this repository, or importable), not an object in one."""
    if name in sys.modules:
        return True
    if name.split(".")[0] in ("worker", "schemas", "tests"):
        path = ROOT.joinpath(*name.split("."))
        return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that is not a package, or no such module
        return False


def imported_modules(module: str, tree: ast.Module, is_package: bool = False) -> dict[str, str]:
    """The names `module` binds to modules by importing them: `import a.b` binds a, `import a.b as m`
    and `from a import b` (b a module) bind m and b."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node, is_package)
            for alias in node.names:
                if is_module(f"{source}.{alias.name}"):
                    bound[alias.asname or alias.name] = f"{source}.{alias.name}"
    return bound


def private_uses(module: str, tree: ast.Module, is_package: bool = False) -> Iterator[Import]:
    """Where `module` takes another module's private name: imports it (see `private_imports`), or reads
    it from a module it imported (`m._y`, `a.b._y`)."""
    yield from private_imports(module, tree, is_package)
    bound = imported_modules(module, tree, is_package)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
            continue
        root, _, rest = _dotted(node.value).partition(".")
        if root in bound:
            owner = ".".join(part for part in (bound[root], rest) if part)
            if is_module(owner):
                yield Import(module, f"{owner}.{node.attr}", node.lineno)


def fake_classes(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """The test doubles a module defines: classes named Fake..., with their lines."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name.startswith(FAKE_PREFIX):
            yield node.name, node.lineno


def test_library_errors_are_seen_only_in_the_adapters() -> None:
    """Only worker/mongo/ and worker/kafka/ import or catch PyMongo's, BSON's or aiokafka's errors."""
    uses = [
        use
        for module, tree in worker_modules().items()
        if not _in_adapter(module)
        for use in library_error_uses(module, tree)
    ]
    assert not uses, "library errors outside worker/mongo/ and worker/kafka/:\n" + "\n".join(uses)


def test_the_command_line_holds_no_domain_logic() -> None:
    """No module of worker/commands/ imports pymongo, bson or aiokafka, not even for a type: the
    commands parse, call worker/'s other packages (the jobs, the clients' factories), and print."""
    found = [
        use
        for module, tree in worker_modules().items()
        if module == COMMANDS or module.startswith(f"{COMMANDS}.")
        for use in driver_imports(module, tree)
    ]
    assert not found, "driver libraries imported by the command line:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from aiokafka import AIOKafkaConsumer\n", ["m:1 imports aiokafka"]),
        ("import pymongo.errors\n", ["m:1 imports pymongo.errors"]),
        ("from bson import ObjectId\n", ["m:1 imports bson"]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from aiokafka.structs import TopicPartition\n",
            ["m:3 imports aiokafka.structs"],
        ),
        ("def f():\n    from pymongo import ASCENDING\n", ["m:2 imports pymongo"]),
        ("from worker.kafka.clients import create_consumer\nfrom . import aiokafka\n", []),
    ],
)
def test_the_domain_logic_check_sees_each_way_in(source: str, expected: list[str]) -> None:
    """A driver imported at the top, in a function or for typing only is found; our own modules are not."""
    assert list(driver_imports("m", ast.parse(source))) == expected


def test_no_import_cycle_in_the_package() -> None:
    """worker/ imports form no cycle (function-local imports count; TYPE_CHECKING-only ones do not)."""
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_imports_point_down_the_layers() -> None:
    """No module imports one of a higher layer (commands -> app -> pipeline/telemetry -> mongo/kafka -> bottom)."""
    upward = upward_imports(import_graph())
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_module_imports_another_modules_private_name() -> None:
    """No module of worker/ takes a `_private` name of another module (but those of PRIVATE_IMPORTS_ALLOWED)."""
    packages = {module_name(path) for path in PACKAGE.rglob("__init__.py")}
    found = [
        edge
        for module, tree in worker_modules().items()
        for edge in private_imports(module, tree, module in packages)
    ]
    taken = [f"{edge.where()} imports {edge.imported}" for edge in found
             if (edge.importer, edge.imported) not in PRIVATE_IMPORTS_ALLOWED]  # fmt: skip
    assert not taken, "private names of other modules imported:\n" + "\n".join(taken)
    gone = PRIVATE_IMPORTS_ALLOWED - {(edge.importer, edge.imported) for edge in found}
    assert not gone, f"no longer imported, tighten PRIVATE_IMPORTS_ALLOWED: {sorted(gone)}"


def test_no_test_takes_another_modules_private_name() -> None:
    """No module of tests/ imports a `_private` name of another module or reads one from a module it
    imported (but those of TEST_PRIVATE_USES_ALLOWED): tests go through the public names."""
    packages = {module_name(path) for path in TESTS.rglob("__init__.py")}
    found = [
        edge
        for module, (_, tree) in modules_of_tests().items()
        for edge in private_uses(module, tree, module in packages)
        if not edge.imported.startswith(f"{module}.")
    ]
    taken = [f"{edge.where()} takes {edge.imported}" for edge in found
             if (edge.importer, edge.imported) not in TEST_PRIVATE_USES_ALLOWED]  # fmt: skip
    assert not taken, "private names of other modules taken by tests:\n" + "\n".join(taken)
    gone = TEST_PRIVATE_USES_ALLOWED - {(edge.importer, edge.imported) for edge in found}
    assert not gone, f"no longer taken, tighten TEST_PRIVATE_USES_ALLOWED: {sorted(gone)}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from worker.mongo.indexes import _spec_of\n", ["worker.mongo.indexes._spec_of"]),
        ("from worker.telemetry import delivery\ndelivery._outcome(1, 2)\n", ["worker.telemetry.delivery._outcome"]),
        ("import worker.telemetry.delivery\nworker.telemetry.delivery._outcome\n", ["worker.telemetry.delivery._outcome"]),
        ("import worker.mongo.writers as w\nw._bulk\n", ["worker.mongo.writers._bulk"]),
        ("from worker.pipeline.consumer_loop import ConsumerLoop\nConsumerLoop._handle\n", []),
        ("from tests.support.kafka import FakeConsumer\nFakeConsumer()._assigned\n", []),
        ("import worker\nworker.__name__\n", []),
    ],
)
def test_the_tests_private_name_check_sees_each_spelling(source: str, expected: list[str]) -> None:
    """A private name imported or read from an imported module counts; one of a class, an instance or a dunder does not."""
    found = private_uses("tests.unit.test_x", ast.parse(source))
    assert [edge.imported for edge in found] == expected


def test_the_fakes_live_in_tests_support_one_of_each() -> None:
    """Classes named Fake... are defined in tests/support/ alone, each name once: a test needing a
    double imports the shared one (and extends it there if it lacks a call)."""
    defined: dict[str, list[str]] = {}
    for _, (path, tree) in modules_of_tests().items():
        for name, line in fake_classes(tree):
            defined.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{line} {name}")
    elsewhere = [where for places in defined.values() for where in places
                 if not where.startswith(f"{SUPPORT.relative_to(ROOT)}/")]  # fmt: skip
    assert not elsewhere, "fakes defined outside tests/support/:\n" + "\n".join(elsewhere)
    twice = {name: places for name, places in defined.items() if len(places) > 1}
    assert not twice, f"fakes defined more than once: {twice}"


def test_the_fake_check_sees_nested_and_derived_fakes() -> None:
    """A Fake... class is found at the top, inside a test function, and deriving from another class."""
    source = "class FakeA:\n    pass\ndef test_x():\n    class FakeB(FakeA):\n        pass\nclass Recording:\n    pass\n"
    assert list(fake_classes(ast.parse(source))) == [("FakeA", 1), ("FakeB", 4)]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from worker.app import _watch, run_worker\n", [("worker.app._watch", 1)]),
        ("from .b import _helper\n", [("worker.pkg.b._helper", 1)]),
        ("import worker._internal\n", [("worker._internal", 1)]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from x import _T\n", [("x._T", 3)]),
        ("from __future__ import annotations\nfrom x import __version__, public\n", []),
    ],
)
def test_the_private_import_check_sees_each_spelling(source: str, expected: list[tuple[str, int]]) -> None:
    """`from x import _y`, relative imports, `import x._y` and TYPE_CHECKING-only imports count; dunders do not."""
    found = private_imports("worker.pkg.a", ast.parse(source))
    assert [(edge.imported, edge.line) for edge in found] == expected


def test_app_reads_as_the_workers_life() -> None:
    """worker/app.py stays within APP_MAX_LINES lines and opens with `serve`, then `run_worker`, then `run_redelivery`."""
    source = (PACKAGE / "app.py").read_text()
    assert len(source.splitlines()) <= APP_MAX_LINES
    public = [
        node.name
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_")
    ]
    assert public == ["serve", "run_worker", "run_redelivery"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from pymongo.errors import PyMongoError\n", ["m:1 imports pymongo.errors"]),
        ("from aiokafka import errors\n", ["m:1 imports aiokafka.errors"]),
        ("import bson.errors\n", ["m:1 imports bson.errors"]),
        (
            "import pymongo\ntry:\n    pass\nexcept pymongo.errors.AutoReconnect:\n    pass\n",
            ["m:4 catches pymongo.errors.AutoReconnect"],
        ),
        ("try:\n    pass\nexcept (ValueError, KafkaError):\n    pass\n", ["m:3 catches KafkaError"]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pymongo.errors import PyMongoError\n",
            [],
        ),
        ("from worker.errors import TransientError\ntry:\n    pass\nexcept TransientError:\n    pass\n", []),
    ],
)
def test_the_boundary_check_sees_each_way_in(source: str, expected: list[str]) -> None:
    """The check finds imports of an error module in every spelling, and catches by name or attribute."""
    assert list(library_error_uses("m", ast.parse(source))) == expected


def test_the_cycle_finder_reports_the_chain() -> None:
    """A cycle is reported as the chain of modules that closes it; an acyclic graph gives none."""
    graph = {
        "a": [Import("a", "b", 1)],
        "b": [Import("b", "c", 1)],
        "c": [Import("c", "a", 1)],
        "d": [Import("d", "a", 1)],
    }
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": [Import("a", "b", 1)], "b": []}) == []


def test_imports_are_resolved_to_modules() -> None:
    """`from worker import x` and relative imports name the module; TYPE_CHECKING-only imports are left out."""
    source = (
        "from typing import TYPE_CHECKING\nfrom worker import settings\nfrom . import b\nfrom .c import f\n"
        "if TYPE_CHECKING:\n    from worker import app\n"
    )
    known = {"worker.settings", "worker.pkg.b", "worker.pkg.c", "worker.app"}
    found = [edge.imported for edge in imports_of("worker.pkg.a", ast.parse(source), known)]
    assert found == ["typing", "worker.settings", "worker.pkg.b", "worker.pkg.c"]
