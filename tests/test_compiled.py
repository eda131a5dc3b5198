"""The levers' compiled modules (`recovea_proxy.compiled`): run only when built from the
sources exactly as they are, else the interpreted modules run; `RECOVEA_COMPILED=off`
always runs the interpreted ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from recovea_proxy import compiled
from recovea_proxy.config import Settings
from recovea_proxy.observability.banner import banner_lines, startup_facts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """`activate` may add to `sys.path` and set `compiled.active`: undone after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(compiled, "active", compiled.active)
    monkeypatch.delenv("RECOVEA_COMPILED", raising=False)


def built(directory: Path, stamp: dict[str, str]) -> Path:
    (directory / "recovea_proxy" / "levers").mkdir(parents=True)
    (directory / "stamp.json").write_text(json.dumps(stamp))
    return directory


@pytest.mark.usefixtures("isolated")
def test_copies_built_from_these_sources_go_first_on_the_levers_path(tmp_path: Path) -> None:
    directory = built(tmp_path / "current", compiled.stamp())
    path = ["/the/sources/recovea_proxy/levers"]
    assert compiled.activate(path, directory) is True
    assert path == [
        str(directory / "recovea_proxy" / "levers"),
        "/the/sources/recovea_proxy/levers",
    ]
    assert str(directory) in sys.path  # mypyc's shared library
    assert compiled.active is True


@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("differs", ["sources", "python", "suffix"])
def test_copies_built_from_other_sources_or_for_another_python_never_run(
    tmp_path: Path, differs: str
) -> None:
    stamp = {**compiled.stamp(), differs: "something else"}
    directory = built(tmp_path / "stale", stamp)
    path = ["/the/sources/recovea_proxy/levers"]
    assert compiled.activate(path, directory) is False
    assert path == ["/the/sources/recovea_proxy/levers"]
    assert str(directory) not in sys.path


@pytest.mark.usefixtures("isolated")
def test_nothing_built_or_a_broken_stamp_runs_the_interpreted_modules(tmp_path: Path) -> None:
    path: list[str] = []
    assert compiled.activate(path, tmp_path / "never-built") is False
    broken = built(tmp_path / "broken", {})
    (broken / "stamp.json").write_text("{not json")
    assert compiled.activate(path, broken) is False
    assert path == []


@pytest.mark.usefixtures("isolated")
def test_recovea_compiled_off_runs_the_interpreted_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = built(tmp_path / "current", compiled.stamp())
    monkeypatch.setenv("RECOVEA_COMPILED", "off")
    path: list[str] = []
    assert compiled.activate(path, directory) is False
    assert path == []


def test_the_stamp_changes_with_any_source_of_the_package(tmp_path: Path) -> None:
    """Not only the compiled modules: they read the others' types."""
    package = tmp_path / "recovea_proxy"
    (package / "levers").mkdir(parents=True)
    (package / "record.py").write_text("x: int = 1\n")
    (package / "levers" / "cache.py").write_text("y = 2\n")
    first = compiled.stamp(package)
    assert compiled.stamp(package) == first
    (package / "record.py").write_text("x: int | None = 1\n")
    edited = compiled.stamp(package)
    assert edited["sources"] != first["sources"]
    (package / "levers" / "slim.py").write_text("z = 3\n")
    added = compiled.stamp(package)
    assert added["sources"] != edited["sources"]
    # what lies in the compiled copies' directory is not a source
    (package / "_compiled").mkdir()
    (package / "_compiled" / "stray.py").write_text("w = 4\n")
    assert compiled.stamp(package) == added


def loaded_from(env: dict[str, str]) -> str:
    """Where a fresh process imports the cache lever from."""
    done = subprocess.run(
        [sys.executable, "-c", "import recovea_proxy.levers.cache as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    return done.stdout.strip()


def test_a_built_gateway_runs_the_compiled_levers_and_off_the_interpreted_ones() -> None:
    """`make` compiles them (CI has a C compiler): a process imports the compiled
    cache lever, and its source with `RECOVEA_COMPILED=off`."""
    current = compiled.DIRECTORY / "stamp.json"
    if not current.exists() or json.loads(current.read_text()) != compiled.stamp():
        missing = compiled.cannot_build()
        if missing is not None:
            pytest.skip(f"not compiled here: {missing}")
        pytest.fail("the lever modules are not compiled for these sources: run make compiled")
    suffix = str(sysconfig.get_config_var("EXT_SUFFIX"))
    assert loaded_from({}).endswith(suffix)
    assert loaded_from({"RECOVEA_COMPILED": "off"}).endswith("levers/cache.py")


def test_the_start_up_lines_say_whether_the_levers_run_compiled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings.from_env()
    for active, said in ((True, "compiled"), (False, "interpreted")):
        monkeypatch.setattr(compiled, "active", active)
        facts = startup_facts(settings, {})
        assert facts["levers"] == said
        assert f"  levers       {said}" in banner_lines(facts)


#: the only asynchronous context manager compiled code may enter: its `__aexit__` never
#: suspends
_SAFE_ASYNC_WITH = {"asyncio.timeout"}


def test_no_compiled_coroutine_may_suspend_while_an_exception_unwinds_it() -> None:
    """mypyc 2.4 miscompiles a compiled coroutine, awaited by another, that suspends in
    an `except`, a `finally` or an `__aexit__` while a cancellation unwinds it (the
    process crashes: bench/README.md, "mypyc, weighed and not taken"). So the compiled
    modules never await in a handler or a `finally`, and enter no asynchronous context
    manager but `asyncio.timeout`, whose `__aexit__` returns without suspending."""
    import ast

    found = []
    for relative in compiled.COMPILED:
        tree = ast.parse((ROOT / relative).read_text(), relative)
        for node in ast.walk(tree):
            unwinding: list[ast.AST] = []
            if isinstance(node, ast.Try | ast.TryStar):
                unwinding = [*node.handlers, *node.finalbody]
            for block in unwinding:
                for inner in ast.walk(block):
                    if isinstance(inner, ast.Await | ast.AsyncWith | ast.AsyncFor):
                        found.append(f"{relative}:{inner.lineno} awaits while unwinding")
            if isinstance(node, ast.AsyncWith):
                for item in node.items:
                    call = item.context_expr
                    name = ast.unparse(call.func) if isinstance(call, ast.Call) else "?"
                    if name not in _SAFE_ASYNC_WITH:
                        found.append(f"{relative}:{node.lineno} enters {name}")
    assert found == []
