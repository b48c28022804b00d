"""The `kseg` command line as an operator runs it: a real `python -m app.cli` process each time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROFILE = ROOT / "app" / "mapping" / "profiles" / "kochava-default.yaml"
README_PURCHASE = (
    "event_name=Purchase&kochava_device_id=KI5678&event_value=19.99&currency=EUR"
    "&network_name=ExampleNetwork&country=DE"
)


def kseg(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `kseg ARGS` with no Kafka and no postback tokens configured.

    The two variables are set to empty (not only removed) so that a `.env` file in the working directory
    cannot fill them in: environment variables take precedence over `.env`.
    """
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KSEG_", "SEGMENT_", "KOCHAVA_"))
    }
    base |= {"KAFKA_BOOTSTRAP_SERVERS": "", "KSEG_POSTBACK_TOKENS": "", "KSEG_HTTP_PORT": "0"} | env
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_top_level_help_names_every_command_and_its_purpose() -> None:
    result = kseg("--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("usage: kseg")
    assert "moves Kochava attribution postbacks into Segment" in out
    for command, purpose in (
        ("run", "receiver, worker, sinks, loader, console"),
        ("receiver", "HTTP receiver"),
        ("worker", "faust worker"),
        ("mapping", "mapping profiles"),
        ("dlq", "dead letters"),
        ("loadgen", "send realistic Kochava postbacks"),
    ):
        lines = [line for line in out.splitlines() if line.strip().startswith(command + " ")]
        assert lines, f"{command} missing from kseg --help:\n{out}"
        assert purpose in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "purpose"),
    [
        (("dlq",), "read the dead-letter topic"),
        (("dlq", "list"), "show dead letters with their reasons"),
        (("dlq", "replay"), "put dead letters back through the pipeline"),
        (("loadgen",), "load generator"),
    ],
)
def test_subcommand_help_states_its_purpose(args: tuple[str, ...], purpose: str) -> None:
    result = kseg(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: kseg {' '.join(args)}"), result.stdout
    text = " ".join(result.stdout.split())  # argparse wraps descriptions at the terminal width
    assert purpose.lower() in text.lower(), result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("mapping",), "{check,try}"),
        (("run",), "usage: kseg run"),
        (("receiver",), "usage: kseg receiver"),
        (("worker",), "usage: kseg worker"),
        (("mapping", "check"), "file"),
        (("mapping", "try"), "--profile"),
    ],
)
def test_role_and_mapping_help_exit_zero_without_starting_anything(
    args: tuple[str, ...], expected: str
) -> None:
    # These subparsers carry only a one-line `help=` (shown in the parent's --help, asserted above and
    # in test_mapping_help_names_check_and_try_purposes), no description of their own; `--help` must
    # still answer at once, without settings or a broker.
    result = kseg(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: kseg {' '.join(args)}"), result.stdout
    assert expected in result.stdout


def test_mapping_help_names_check_and_try_purposes() -> None:
    result = kseg("mapping", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "validate a profile file" in text
    assert "acquisition channel, stage), Segment calls and warehouse row" in text


def test_receiver_without_tokens_refuses_to_start() -> None:
    result = kseg("receiver")
    assert result.returncode != 0
    assert "KSEG_POSTBACK_TOKENS" in result.stderr, result.stderr


def test_worker_without_kafka_refuses_to_start() -> None:
    result = kseg("worker")
    assert result.returncode != 0
    assert "KAFKA_BOOTSTRAP_SERVERS" in result.stderr, result.stderr


def test_dlq_without_kafka_names_the_variable() -> None:
    result = kseg("dlq", "list")
    assert result.returncode != 0
    assert "KAFKA_BOOTSTRAP_SERVERS" in result.stderr, result.stderr


def test_mapping_try_on_the_readme_purchase() -> None:
    result = kseg("mapping", "try", README_PURCHASE)
    assert result.returncode == 0, result.stderr
    preview = json.loads(result.stdout)
    tracks = [m for m in preview["segment"] if m["type"] == "track"]
    # A first purchase converts the device: its stage change is a track of its own.
    assert [m["event"] for m in tracks] == ["Order Completed", "Lifecycle Stage Changed"]
    assert tracks[1]["properties"] == {"to": "converted", "reason": "conversion"}
    assert preview["lifecycle"]["stage"] == "converted"
    assert preview["lifecycle"]["reporting_currency"] == "USD"
    assert preview["warehouse"]["revenue_reporting"] == round(19.99 * 1.08, 6)
    props = tracks[0]["properties"]
    assert props["revenue"] == 19.99
    assert props["currency"] == "EUR"
    assert props["campaign"]["source"] == "ExampleNetwork"
    assert preview["warehouse"]["event_type"] == "purchase"
    assert preview["warehouse"]["revenue"] == 19.99
    assert preview["warehouse"]["profile"] == "kochava-default"


def test_mapping_try_reports_the_dead_letter_and_exits_1() -> None:
    result = kseg("mapping", "try", README_PURCHASE.replace("19.99", "-1"))
    assert result.returncode == 1, result.stdout + result.stderr
    preview = json.loads(result.stdout)
    assert preview["dead_letter"]["reason"] == "invalid_revenue"


def test_mapping_check_accepts_the_shipped_default_profile() -> None:
    result = kseg("mapping", "check", str(DEFAULT_PROFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK profile kochava-default v2"


def test_mapping_check_reports_file_and_line_of_each_problem(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text('name: broken\nversion: "1"\nfields:\n  event_name: [evt]\n  idfaa: [idfa]\n')
    result = kseg("mapping", "check", str(broken))
    assert result.returncode == 1, result.stdout
    assert f"{broken}:5:" in result.stdout, result.stdout
    assert "idfaa" in result.stdout
    assert "OK" not in result.stdout


def test_mapping_check_reports_a_yaml_syntax_error_with_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "syntax.yaml"
    broken.write_text('name: syntax\nversion: "1"\nevent_names:\n  Purchase: "Order Completed\n')
    result = kseg("mapping", "check", str(broken))
    assert result.returncode == 1, result.stdout
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"{broken}:"), result.stdout
    line = first[len(str(broken)) + 1 :].split(":", 1)[0]
    assert line.isdigit() and int(line) >= 4, result.stdout
