"""Body of `kseg mapping check` (app/cli.py wires the arguments; `mapping try` is `app.pipeline.preview`)."""

from __future__ import annotations

from pathlib import Path

from app.mapping.profile import check_profile_file, load_profile_file


def cmd_check(path: Path | str) -> int:
    """Print `FILE:LINE: message` per problem (exit 1), or `OK profile NAME vVERSION` per file."""
    target = Path(path)
    files = sorted([*target.glob("*.yaml"), *target.glob("*.yml")]) if target.is_dir() else [target]
    if not files:
        print(f"{target}:1: no profile files (*.yaml) found")
        return 1
    failed = False
    for file in files:
        problems = check_profile_file(file)
        for problem in problems:
            print(problem)
        if problems:
            failed = True
            continue
        profile = load_profile_file(file)
        print(f"OK profile {profile.name} v{profile.version}")
    return 1 if failed else 0
