"""bench/broker_profile.py folds `perf script` output into shares by what the kernel stack says: plain
text in, shares out (what the bench's broker profile table shows)."""

from __future__ import annotations

from bench import broker_profile


def sample(*kernel: str, user: bool = True) -> str:
    """One sample as `perf script` prints it: a header line, then its frames innermost first (kernel
    frames, then the broker's own, unnamed in a stripped binary)."""
    frames = [f"\tffffffff8170{n:04x} {symbol}+0x56 ([kernel.kallsyms])" for n, symbol in enumerate(kernel)]
    if user:
        frames.append("\t          5a1b2c [unknown] (/usr/bin/tansu)")
    return "\n".join(["tansu  4711 35325.1:     2004008 cpu-clock:ppp:", *frames]) + "\n"


SYSCALL = ("do_syscall_64", "entry_SYSCALL_64_after_hwframe")
USER_ONLY = sample()
PAGE_FAULT = sample("clear_page_erms", "handle_mm_fault", "do_user_addr_fault", "asm_exc_page_fault")
MUNMAP = sample("unmap_page_range", "__x64_sys_munmap", *SYSCALL)
FUTEX = sample("__x64_sys_futex", *SYSCALL, user=False)
OTHER_SYSCALL = sample("__x64_sys_openat", *SYSCALL, user=False)
TIMER = sample("__irq_exit_rcu", "sysvec_apic_timer_interrupt")


def test_each_sample_is_charged_by_its_kernel_frames() -> None:
    text = "\n".join([USER_ONLY, USER_ONLY, PAGE_FAULT, MUNMAP, FUTEX, OTHER_SYSCALL, TIMER, USER_ONLY])
    shares = broker_profile.breakdown(text.splitlines())
    assert shares["samples"] == 8
    assert shares[broker_profile.OWN] == 37.5
    assert shares["memory mapping churn (page faults, munmap, mremap, madvise, mmap)"] == 25.0
    assert shares["futex (thread wake-ups and waits)"] == 12.5
    assert shares[broker_profile.OTHER_SYSCALLS] == 12.5
    assert shares[broker_profile.SCHEDULER] == 12.5
    # Largest first, the sample count last.
    assert next(iter(shares)) == broker_profile.OWN and list(shares)[-1] == "samples"


def test_no_samples_is_no_profile() -> None:
    assert broker_profile.breakdown([]) == {}
    assert broker_profile.breakdown(["", ""]) == {}
