#!/usr/bin/env python3
"""Print the project's requirements (core dependencies plus the named extras) from pyproject.toml.

One source of truth for the wheelhouse download on the host and for the dependency layers of the
Docker build, which install the dependencies before the project's code is copied so that a code
change does not reinstall them. Standard library only (tomllib, Python 3.11+).

    requirements.py [--pyproject FILE] [--exclude NAME ...] EXTRA[,EXTRA...]
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    own_name = canonical(project["name"])
    optional = project.get("optional-dependencies", {})
    result: list[str] = []
    seen_extras: set[str] = set()

    def add(requirement: str) -> None:
        match = _NAME.match(requirement)
        if match is None:
            raise SystemExit(f"cannot parse requirement {requirement!r} in {pyproject}")
        if canonical(match.group(1)) == own_name:  # e.g. dev = ["monoserve[serve,train]"]
            for extra in (match.group(2) or "").split(","):
                add_extra(extra.strip())
        elif requirement not in result:
            result.append(requirement)

    def add_extra(extra: str) -> None:
        if not extra or extra in seen_extras:
            return
        if extra not in optional:
            raise SystemExit(f"unknown extra {extra!r}; {pyproject} defines {sorted(optional)}")
        seen_extras.add(extra)
        for requirement in optional[extra]:
            add(requirement)

    for requirement in project.get("dependencies", []):
        add(requirement)
    for extra in extras:
        add_extra(extra)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", help="comma-separated extras, e.g. train,serve ('' for none)")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="NAME",
        help="drop this distribution (e.g. onnxruntime when onnxruntime-gpu replaces it)",
    )
    args = parser.parse_args(argv)
    excluded = {canonical(name) for name in args.exclude}
    extras = [extra.strip() for extra in args.extras.split(",") if extra.strip()]
    for requirement in requirements(args.pyproject, extras):
        match = _NAME.match(requirement)
        if match and canonical(match.group(1)) not in excluded:
            sys.stdout.write(requirement + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
