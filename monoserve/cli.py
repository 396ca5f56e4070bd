"""`monoserve` console script: a thin dispatcher over the subcommands of each package.

Each subcommand module exposes `register(subparsers)` that adds its parser and sets
`func=handler`; those modules import only argparse at import time, so `monoserve serve` with the
ONNX engine never imports torch. Handlers return an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# module path -> registers one or more subcommands
SUBCOMMAND_MODULES = (
    "models.cli",  # train, attack
    "export.cli",  # export, verify
    "service.cli",  # serve
    "batch.cli",  # batch
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monoserve", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # the package (or its CLI module) is not installed here, e.g. batch/ in the serving image;
            # a missing dependency inside a present module is a real error
            if exc.name not in (module_name, module_name.split(".")[0]):
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if os.environ.get("MONOSERVE_LOG_FORMAT", "").lower() == "json":  # the same format as the server's lines
        from service.base.context import JsonFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    else:
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
