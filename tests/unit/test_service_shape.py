"""Every service has one shape: its handlers and HTTP modules reach the store only through the
service's `store.py`, never through `shared.mongo` or a raw `db.<collection>`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
USE_CASE_MODULES = sorted(
    [*ROOT.glob("services/*/handlers.py"), *ROOT.glob("services/*/*api.py")],
    key=str,
)


def store_calls(path: Path) -> list[str]:
    """Where the module imports `shared.mongo` or touches a database directly (`db.x`,
    `runtime.db`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = {a.name for a in node.names}
            if node.module == "shared.mongo" or (node.module == "shared" and "mongo" in names):
                found.append(f"line {node.lineno}: imports shared.mongo")
        elif isinstance(node, ast.Import) and any(a.name == "shared.mongo" for a in node.names):
            found.append(f"line {node.lineno}: imports shared.mongo")
        elif isinstance(node, ast.Attribute) and (
            node.attr == "db" or (isinstance(node.value, ast.Name) and node.value.id == "db")
        ):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(
    "path",
    USE_CASE_MODULES,
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_handlers_and_apis_reach_the_store_only_through_store_py(path: Path):
    assert store_calls(path) == []


def test_the_check_sees_a_raw_collection_call_and_an_import_of_shared_mongo(tmp_path: Path):
    module = tmp_path / "handlers.py"
    module.write_text(
        "from shared.mongo import update_if\n"
        "async def f(runtime, db):\n"
        "    await db.devices.find_one({})\n"
        "    await runtime.db.lots.delete_one({})\n"
    )

    assert store_calls(module) == [
        "line 1: imports shared.mongo",
        "line 3: db.devices",
        "line 4: runtime.db",
    ]


def test_every_service_is_checked():
    checked = {p.parent.name for p in USE_CASE_MODULES}
    assert checked >= {"allocation", "custody", "diagnostics", "intake", "recycling"}


STAND_INS = ("ferretdb", "secantus", "sqlite")


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in [*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/*.py")]
        if p.name != "store_adapter.py"
    ),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_only_the_store_adapter_names_a_stand_in_store(path: Path):
    """The services are written for MongoDB; a stand-in's quirks live in shared/store_adapter.py
    (issue 15), so no other module of services/ or shared/ names one, not even in a comment."""
    text = path.read_text().lower()
    assert [s for s in STAND_INS if s in text] == []
