"""bench/broker_profile.py folds `perf script` output into shares by what the kernel stack says: plain
text in, shares out (what the bench's broker profile table shows)."""

from __future__ import annotations

from bench import broker_profile

USER_ONLY = """tansu  4711 35325.1:     2004008 cpu-clock:ppp:
\t          5a1b2c [unknown] (/usr/bin/tansu)
\t          5a0000 [unknown] (/usr/bin/tansu)
"""
PAGE_FAULT = """tansu  4711 35325.2:     2004008 cpu-clock:ppp:
\tffffffff81704dc6 clear_page_erms+0x6 ([kernel.kallsyms])
\tffffffff816f007e handle_mm_fault+0x2e ([kernel.kallsyms])
\tffffffff816f3970 do_user_addr_fault+0x20 ([kernel.kallsyms])
\tffffffff816f3cfe asm_exc_page_fault+0x26 ([kernel.kallsyms])
\t          5a1b2c [unknown] (/usr/bin/tansu)
"""
MUNMAP = """tansu  4712 35325.3:     2004008 cpu-clock:ppp:
\tffffffff81704dc6 unmap_page_range+0x56 ([kernel.kallsyms])
\tffffffff816d870d __x64_sys_munmap+0x5d ([kernel.kallsyms])
\tffffffff8223c951 do_syscall_64+0x71 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe+0x76 ([kernel.kallsyms])
\t          1019b3 [unknown] (/usr/bin/tansu)
"""
FUTEX = """tansu  4712 35325.4:     2004008 cpu-clock:ppp:
\tffffffff816d870d __x64_sys_futex+0x5d ([kernel.kallsyms])
\tffffffff8223c951 do_syscall_64+0x71 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe+0x76 ([kernel.kallsyms])
"""
OTHER_SYSCALL = """tansu  4712 35325.5:     2004008 cpu-clock:ppp:
\tffffffff816d870d __x64_sys_openat+0x5d ([kernel.kallsyms])
\tffffffff8223c951 do_syscall_64+0x71 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe+0x76 ([kernel.kallsyms])
"""
TIMER = """tansu  4712 35325.6:     2004008 cpu-clock:ppp:
\tffffffff816d870d __irq_exit_rcu+0x5d ([kernel.kallsyms])
\tffffffff8223c951 sysvec_apic_timer_interrupt+0x71 ([kernel.kallsyms])
\t          5a1b2c [unknown] (/usr/bin/tansu)
"""


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
