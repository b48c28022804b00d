"""Where the embedded broker's CPU goes: `perf record` samples of its process folded into shares by what
the kernel stack says the sample was doing.

Why: the broker runs on the same two cores as kseg's processes, so its CPU per postback is part of kseg's
(the bench counts it next to the worker's). Tansu ships as a stripped static binary, so its own functions
have no names; the kernel frames still say when it was faulting pages in, unmapping memory, waiting on a
futex or in socket calls, which is what kseg's batching can change (fewer and fuller requests). Needs
`perf` (linux-perf) and the right to sample another process (root, or kernel.perf_event_paranoid <= 1).

    perf record -F 499 -g -p BROKER_PID -o broker.perf -- sleep 30   # while a worker drains
    python -m bench.broker_profile broker.perf
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from bench.profile_breakdown import percent_shares, print_shares

#: Sampling rate (Hz): an odd number, so it does not beat with the processes' own timers.
PERF_HZ = 499

#: (component, kernel symbols any of which in a sample's stack charges the sample to it), first match wins.
KERNEL_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "memory mapping churn (page faults, munmap, mremap, madvise, mmap)",
        (
            "asm_exc_page_fault",
            "exc_page_fault",
            "do_user_addr_fault",
            "__x64_sys_munmap",
            "__vm_munmap",
            "__x64_sys_mremap",
            "__x64_sys_madvise",
            "ksys_mmap_pgoff",
            "__x64_sys_mmap",
            "__x64_sys_brk",
        ),
    ),
    ("futex (thread wake-ups and waits)", ("__x64_sys_futex",)),
    ("epoll waits", ("__x64_sys_epoll_wait", "__x64_sys_epoll_pwait", "__x64_sys_epoll_pwait2")),
    (
        "socket send and receive",
        (
            "__x64_sys_sendto",
            "__x64_sys_recvfrom",
            "__x64_sys_sendmsg",
            "__x64_sys_recvmsg",
            "__x64_sys_write",
            "__x64_sys_read",
            "__x64_sys_writev",
            "__x64_sys_readv",
        ),
    ),
)
OWN = "the broker's own code (user space)"
OTHER_SYSCALLS = "other system calls"
SCHEDULER = "scheduler and interrupts"


def perf() -> str | None:
    """The `perf` executable, or None when it is not installed."""
    return shutil.which("perf")


def classify(frames: list[str]) -> str:
    """The component of one sample, from its stack's frames (`perf script` lines, innermost first)."""
    kernel = [
        line.split()[1].split("+")[0]
        for line in frames
        if "[kernel.kallsyms]" in line and len(line.split()) > 1
    ]
    if not kernel:
        return OWN
    for component, symbols in KERNEL_RULES:
        if any(symbol in kernel for symbol in symbols):
            return component
    if "entry_SYSCALL_64_after_hwframe" in kernel or "do_syscall_64" in kernel:
        return OTHER_SYSCALLS
    return SCHEDULER


def samples(lines: Iterable[str]) -> Counter[str]:
    """Samples per component from `perf script` output: a header line per sample, then its frames
    (indented), then a blank line."""
    counts: Counter[str] = Counter()
    frames: list[str] | None = None
    for line in [*lines, ""]:
        if not line.strip():
            if frames is not None:
                counts[classify(frames)] += 1
            frames = None
        elif line[0].isspace():
            if frames is not None:
                frames.append(line.strip())
        else:
            frames = []
    return counts


def breakdown(lines: Iterable[str]) -> dict[str, float]:
    """Percent of samples per component, largest first, plus the sample count."""
    return percent_shares(samples(lines))


def read(data: Path) -> dict[str, float]:
    """`breakdown` of a perf.data file (`perf script` reads it)."""
    exe = perf()
    if exe is None or not data.exists():
        return {}
    text = subprocess.run(
        [exe, "script", "-i", str(data)], capture_output=True, text=True, check=False
    ).stdout
    return breakdown(text.splitlines())


async def perf_sampled(pid: int, out: Path, until: Callable[[], Awaitable[object]]) -> dict[str, float]:
    """perf samples of `pid` (all its threads, with call stacks) while `until()` runs, as shares; {} when
    perf is missing or may not sample it (the caller says so)."""
    exe = perf()
    if exe is None:
        await until()
        return {}
    proc = subprocess.Popen(
        [exe, "record", "-F", str(PERF_HZ), "-g", "-p", str(pid), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await until()
    finally:
        proc.send_signal(signal.SIGINT)  # perf writes its file on Ctrl-C
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return read(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("data", nargs="+", type=Path, help="perf record output files (perf.data)")
    args = parser.parse_args(argv)
    if perf() is None:
        print("perf is not installed (apt install linux-perf)", file=sys.stderr)
        return 2
    for path in args.data:
        print_shares(path, read(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
