"""Load generation for kseg: realistic Kochava postbacks sent open-loop at a target rate.

Used by `kseg loadgen`, the bench scripts and the end-to-end tests, so all three speak the same
traffic shape and read the same report.
"""

from app.loadgen.postbacks import DEFAULT_MIX, KINDS, Postback, PostbackGenerator
from app.loadgen.report import LoadReport
from app.loadgen.runner import run_load
from app.loadgen.spike import Schedule, SpikeSpec, SpikeSpecError, parse_spike

__all__ = [
    "DEFAULT_MIX",
    "KINDS",
    "LoadReport",
    "Postback",
    "PostbackGenerator",
    "Schedule",
    "SpikeSpec",
    "SpikeSpecError",
    "parse_spike",
    "run_load",
]
