"""`python -m export CKPT --repo DIR [--name NAME] [--formats onnx,torchscript,pt2] [--opset N] [--atol X]`."""

from __future__ import annotations

import argparse
import logging
import sys

from export.cli import add_export_arguments, run_export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description="Export a checkpoint as a model version.")
    add_export_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_export(args)


if __name__ == "__main__":
    sys.exit(main())
