"""Where the sinks run: in the worker (KSEG_WORKER_SINKS, the default) or in `kseg sinks`, both built by
the worker's one composition root. The running processes are proven in
tests/integration/test_sinks_process.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import Settings
from app.sinks.consumer import SinkConsumer
from app.worker.app import create_sinks, create_worker, state_dir
from tests.unit.test_cli import kseg


def settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, kafka_bootstrap_servers="127.0.0.1:9", kseg_data_dir=tmp_path, **kw
    )


def sinks_of(ctx: Any) -> dict[str, SinkConsumer]:
    return {child.name: child for child in ctx.faust_app._children if isinstance(child, SinkConsumer)}


def test_a_worker_runs_the_sinks_by_default_and_not_when_told(tmp_path: Path) -> None:
    both = create_worker(settings(tmp_path))
    without = create_worker(settings(tmp_path, kseg_worker_sinks=False))
    assert set(sinks_of(both)) == {"segment-sink", "kochava-sink"} and len(both.positions) == 2
    assert sinks_of(without) == {} and without.positions == []
    # Everything else is the same worker: its agents and tables, its group and pages.
    assert set(without.faust_app.agents) == set(both.faust_app.agents) and without.faust_app.agents
    assert set(without.faust_app.tables) == set(both.faust_app.tables) and without.faust_app.tables
    assert without.faust_app.conf.id == both.faust_app.conf.id == "kseg"
    assert without.faust_app.conf.web_port == 6066


def test_kseg_sinks_runs_only_the_sinks_in_a_faust_group_of_its_own(tmp_path: Path) -> None:
    ctx = create_sinks(settings(tmp_path, kseg_sinks_web_port=7067))
    worker = create_worker(settings(tmp_path))
    app = ctx.faust_app
    assert not app.agents and not app.tables  # faust's assignor has no table partition to give it
    assert app.conf.id == "kseg-sinks" != worker.faust_app.conf.id  # never a member of the worker's group
    assert app.conf.consumer_group_instance_id == "kseg-sinks-worker-1"
    assert app.conf.web_port == 7067 and app.conf.web_bind == "127.0.0.1"
    assert Path(app.conf.datadir) == state_dir(ctx.settings, "kseg-sinks") != state_dir(ctx.settings)
    sinks, in_worker = sinks_of(ctx), sinks_of(worker)
    assert set(sinks) == set(in_worker) == {"segment-sink", "kochava-sink"}
    # The same consumer groups as the worker's sinks: the processes that run a sink share its partitions.
    assert {name: s.group for name, s in sinks.items()} == {name: s.group for name, s in in_worker.items()}
    assert {s.group for s in sinks.values()} == {"kseg-segment-sink", "kseg-kochava-sink"}


def test_kseg_sinks_help_and_refusal_without_kafka() -> None:
    helped = kseg("sinks", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: kseg sinks"), helped.stderr
    assert "KSEG_WORKER_SINKS=false" in " ".join(helped.stdout.split())
    listed = kseg("--help").stdout
    assert any(
        line.strip().startswith("sinks ") and "Segment and Kochava" in line for line in listed.splitlines()
    )
    refused = kseg("sinks")
    assert refused.returncode != 0 and "KAFKA_BOOTSTRAP_SERVERS" in refused.stderr, refused.stderr


def test_kseg_run_says_it_ignores_an_operators_kseg_worker_sinks_true() -> None:
    from app.supervisor import child_env, sinks_note

    for value in ("true", "1", " Yes ", "on"):
        note = sinks_note({"KSEG_WORKER_SINKS": value})
        assert note is not None and "ignored" in note and "kseg worker" in note
    for environ in ({}, {"KSEG_WORKER_SINKS": "false"}, {"KSEG_WORKER_SINKS": "0"}):
        assert sinks_note(environ) is None
    # Whatever the operator set, the worker kseg run starts has no sinks (its `sinks` child has them).
    assert child_env(Settings(_env_file=None), "127.0.0.1:9", embedded=False)["KSEG_WORKER_SINKS"] == "false"  # type: ignore[call-arg]
