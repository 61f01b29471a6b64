"""The shape of a store command as the slow-command log writes it: names, never values."""

import json

import pytest

from shared.mongo import command_shape


@pytest.mark.parametrize(
    ("command", "shape"),
    [
        (
            {"find": "devices", "filter": {"pickup_id": "p1", "state": "ready"}, "limit": 1},
            {"command": "find", "collection": "devices", "filter": ["pickup_id", "state"]},
        ),
        (
            {"update": "stock", "updates": [{"q": {"_id": "d1"}, "u": {"$set": {"x": 1}}}]},
            {"command": "update", "collection": "stock", "filter": ["_id"]},
        ),
        (
            {"delete": "available", "deletes": [{"q": {"_id": "d1"}, "limit": 1}]},
            {"command": "delete", "collection": "available", "filter": ["_id"]},
        ),
        (
            {"count": "devices", "query": {"partner_id": "acme"}},
            {"command": "count", "collection": "devices", "filter": ["partner_id"]},
        ),
        (
            {"aggregate": "devices", "pipeline": [{"$match": {"stage": "x"}}, {"$count": "n"}]},
            {"command": "aggregate", "collection": "devices", "filter": ["stage"]},
        ),
        (
            {"insert": "devices", "documents": [{"_id": "d1", "serial": "S"}]},
            {"command": "insert", "collection": "devices", "filter": []},
        ),
        ({"ping": 1}, {"command": "ping", "collection": "", "filter": []}),
    ],
)
def test_a_command_is_named_with_its_collection_and_filter_fields(command, shape):
    assert command_shape(command) == shape


def test_the_chaos_run_ranks_the_logged_slow_commands_by_total_time(tmp_path):
    from tools.chaos import slow_commands

    def line(service, collection, fields, ms):
        shape = {"command": "find", "collection": collection, "filter": fields, "ms": ms}
        return json.dumps(
            {"service": service, "message": "slow store command", "store_command": shape}
        )

    (tmp_path / "intake.log").write_text(
        "\n".join(
            [
                line("intake", "devices", ["pickup_id"], 1200.0),
                line("intake", "devices", ["pickup_id"], 1800.0),
                '{"message": "something else"}',
                "not json, a traceback line",
            ]
        )
    )
    (tmp_path / "allocation.log").write_text(line("allocation", "stock", ["state"], 2500.0))
    lines = slow_commands(tmp_path)
    assert lines[0].startswith("slow store commands: 3 ")
    assert lines[1].split()[:5] == ["intake", "find", "devices", "by", "pickup_id"]
    assert "2x  total      3.0 s" in lines[1]
    assert lines[2].split()[:5] == ["allocation", "find", "stock", "by", "state"]
    assert len(lines) == 3
