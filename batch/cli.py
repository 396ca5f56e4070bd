"""`monoserve batch`: score a dataset with a proven version. Only argparse at import time (the
console script imports every subcommand's parser)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "batch", help="score Parquet/CSV files with a proven model version (local or Ray Data)",
        description="Score a Parquet or CSV file, folder or glob with a model version proven exactly as "
                    "`monoserve serve` proves it; answers equal /classify's and /smooth's. The output is "
                    "published only when the whole run succeeded (docs/batch.md).")
    parser.add_argument("--repo", required=True, help="model repository (REPO/NAME/VERSION)")
    parser.add_argument("--model", required=True, help="model name")
    parser.add_argument("--version", type=int, default=None, help="version (default: the newest that passes the proof)")
    parser.add_argument("--input", required=True, help="a .parquet or .csv file, a folder of them, or a glob")
    parser.add_argument("--output", required=True,
                        help="local engine: a .parquet or .csv file; ray: a folder of Parquet files")
    parser.add_argument("--engine", choices=("local", "ray"), default="local", help="default: local (no Ray needed)")
    parser.add_argument("--ray-address", default=None, help="a Ray cluster's address (default: start Ray on this machine)")
    parser.add_argument("--keep", default="", metavar="COL,...", help="input columns passed through to the output")
    parser.add_argument("--column", default=None, help="smoother: the list column holding one signal per row")
    parser.add_argument("--id", default=None, help="smoother, long format: the series id column")
    parser.add_argument("--time", default=None, help="smoother, long format: the column each series is sorted by")
    parser.add_argument("--value", default=None, help="smoother, long format: the sample column")
    parser.add_argument("--mode", choices=("same", "causal", "valid"), default=None,
                        help="smoother edge mode (default: the model's declared one)")
    parser.add_argument("--on-bad-rows", choices=("fail", "skip", "null"), default="fail",
                        help="a row with a missing, non-numeric or non-finite value: fail the run naming file, row "
                             "and column (default), leave it out, or keep it with null answers; counted either way")
    parser.add_argument("--batch-rows", type=int, default=65_536, help="rows per batch (bounds memory; default 65536)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime threads (local: default all usable CPUs; ray: per actor, default 1)")
    parser.add_argument("--actors", type=int, default=None,
                        help="ray: actors scoring in parallel (default: the cluster's CPUs / threads, less one for reading)")
    parser.add_argument("--trusted-key", action="append", default=None, metavar="PEM",
                        help="accept only versions signed by this key (repeatable; default MONOSERVE_TRUSTED_KEYS)")
    parser.set_defaults(func=batch_command)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the run: the temporary output is removed


def batch_command(args: argparse.Namespace) -> int:
    try:
        import pyarrow  # noqa: F401 - the `batch` extra; the serving image has the command but not the extra
    except ImportError:
        print("monoserve batch: needs the batch extra (pip install 'monoserve[batch]', or 'monoserve[ray]' "
              "for --engine ray)", file=sys.stderr)
        return 2
    from batch.errors import BatchError
    from batch.job import run_batch
    from batch.spec import BatchJob

    job = BatchJob(repo=args.repo, model=args.model, version=args.version, input=args.input, output=args.output,
                   engine=args.engine, ray_address=args.ray_address,
                   keep=[name.strip() for name in args.keep.split(",") if name.strip()],
                   column=args.column, id=args.id, time=args.time, value=args.value, mode=args.mode,
                   on_bad_rows=args.on_bad_rows, batch_rows=args.batch_rows, threads=args.threads, actors=args.actors,
                   trusted_keys=args.trusted_key)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        summary = run_batch(job)
    except BatchError as exc:
        print(f"monoserve batch: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("monoserve batch: interrupted; nothing was written to the output", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"{summary.rows_in} rows in, {summary.rows_out} out, {summary.bad_rows} bad ({job.on_bad_rows}), "
          f"{summary.seconds:.1f} s -> {summary.output}")
    return 0
