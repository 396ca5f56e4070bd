"""`monoserve export` / `python -m export`: publish a checkpoint as a verified model version.

Only argparse and the stdlib at import time: `monoserve serve` builds this parser without torch.
Exit codes: 0 published; 1 refused (constraint violations, parity mismatches, an artifact that
could not be written, a name that holds another model kind without --replace-kind); 2 bad input
(missing or unreadable checkpoint, unknown kind or checkpoint format, unknown export format, bad
name/opset/tolerance, unwritable repository).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator

from contract.manifest import FORMATS
from export.errors import ExportInputError
from export.publish import check_repository_writable
from export.validation import normalize_formats, validate_name, validate_opset, validate_tolerance

EXIT_OK, EXIT_REFUSED, EXIT_BAD_INPUT = 0, 1, 2


def parse_formats(text: str) -> tuple[str, ...]:
    """argparse type for --formats: a comma-separated subset of the known formats."""
    try:
        return normalize_formats(text)
    except ExportInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def precheck(args: argparse.Namespace) -> None:
    """The usage errors that need no torch, answered before importing it (ExportInputError)."""
    if args.name is not None:
        validate_name(args.name)
    for label in ("atol", "rtol"):
        if getattr(args, label) is not None:
            validate_tolerance(label, getattr(args, label))
    validate_opset(args.opset)
    if not args.checkpoint.is_file():
        raise ExportInputError(f"checkpoint not found: {args.checkpoint}")
    check_repository_writable(args.repo)
    sign_key = getattr(args, "sign_key", None)
    if sign_key is not None and not sign_key.is_file():
        raise ExportInputError(f"signing key not found: {sign_key}")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint written by `monoserve train` (models.checkpoint)")
    parser.add_argument("--repo", type=Path, required=True, help="model repository root (Triton layout REPO/NAME/VERSION)")
    parser.add_argument("--name", default=None, help="model name in the repository (default: the checkpoint's kind)")
    parser.add_argument(
        "--formats",
        type=parse_formats,
        default=FORMATS,
        help=f"comma-separated formats to write (default: {','.join(FORMATS)})",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's, 18 or newer)")
    parser.add_argument(
        "--atol", type=float, default=None, help="parity tolerance: |artifact - eager| <= atol + rtol*|eager| (default 1e-5)"
    )
    parser.add_argument("--rtol", type=float, default=None, help="relative part of the parity tolerance (default 1e-5)")
    parser.add_argument(
        "--allow-unconstrained", action="store_true",
        help="prove with a policy that allows an unconstrained (scope 'none') classifier, to publish it as a "
             "baseline; a service with the default policy still refuses it",
    )
    parser.add_argument(
        "--replace-kind", action="store_true",
        help="publish even when NAME holds versions of another model kind (refused otherwise, exit 1)")


def add_sign_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sign-key", type=Path, default=None, metavar="KEY",
        help="sign the version with this elliptic-curve private key (PEM; password, if any, in "
             "MONOSERVE_SIGN_KEY_PASSWORD): VERSION/model.sig covers every file (docs/threat-model.md)")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="fold, check, write ONNX/TorchScript/pt2, verify parity and publish a model version",
        description=__doc__.splitlines()[0],
    )
    add_export_arguments(parser)
    add_sign_argument(parser)
    parser.set_defaults(func=run_export)

    sign = subparsers.add_parser(
        "sign", help="sign a published model version (VERSION/model.sig over every file of it)",
        description="Write VERSION/model.sig, an OpenSSF model-signing signature over every file of the version "
                    "directory, with an elliptic-curve private key (offline). The service checks it when "
                    "MONOSERVE_TRUSTED_KEYS names the public key.")
    sign.add_argument("version_dir", type=Path, metavar="DIR/NAME/VERSION", help="a published model version directory")
    sign.add_argument("--key", type=Path, required=True, help="elliptic-curve private key (PEM)")
    sign.add_argument("--certificate", type=Path, default=None, metavar="PEM",
                      help="the key's signing certificate: the bundle then carries it (and --chain), for a service "
                           "that trusts a CA (MONOSERVE_TRUSTED_KEYS naming certificates)")
    sign.add_argument("--chain", type=Path, action="append", default=[], metavar="PEM",
                      help="an intermediate certificate to include (repeatable)")
    sign.set_defaults(func=run_sign)


def run_sign(args: argparse.Namespace) -> int:
    import os

    from contract.signing import SignatureError, sign_version

    if not (args.version_dir / "manifest.json").is_file():
        print(f"error: {args.version_dir} is not a model version (no manifest.json)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        path = sign_version(args.version_dir, args.key, os.environ.get("MONOSERVE_SIGN_KEY_PASSWORD"),
                            certificate=args.certificate, chain=args.chain)
    except (SignatureError, ValueError, OSError, TypeError) as exc:
        print(f"error: cannot sign {args.version_dir}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(path)
    return EXIT_OK


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit so the export's cleanup (staging directory) runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_export(args: argparse.Namespace) -> int:
    import os

    try:
        precheck(args)
    except ExportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    from export.errors import ExportError, KindConflictError, ParityError, ProofRefusedError
    from models.checkpoint import CheckpointError  # imports torch

    from export.core import ConstraintRefusedError, export_checkpoint
    from export.parity import DEFAULT_ATOL, DEFAULT_RTOL

    try:
        with _sigterm_as_exit():
            result = export_checkpoint(
                args.checkpoint,
                args.repo,
                name=args.name,
                formats=args.formats,
                opset=args.opset,
                atol=DEFAULT_ATOL if args.atol is None else args.atol,
                rtol=DEFAULT_RTOL if args.rtol is None else args.rtol,
                allow_unconstrained=args.allow_unconstrained,
                replace_kind=args.replace_kind,
                sign_key=getattr(args, "sign_key", None),
                sign_key_password=os.environ.get("MONOSERVE_SIGN_KEY_PASSWORD"),
            )
    except (CheckpointError, ExportInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ConstraintRefusedError as exc:
        # the exception's message is capped; the CLI lists every violation
        print(f"refused: {exc.checkpoint}: {len(exc.violations)} constraint violation(s), nothing exported", file=sys.stderr)
        for violation in exc.violations:
            print(f"  {violation}", file=sys.stderr)
        return EXIT_REFUSED
    except ParityError as exc:
        print(
            f"refused: {len(exc.mismatches)} parity mismatch(es) against eager torch "
            f"(atol {exc.atol:g}, rtol {exc.rtol:g}), nothing published",
            file=sys.stderr,
        )
        for mismatch in exc.mismatches:
            print(f"  {mismatch}", file=sys.stderr)
        return EXIT_REFUSED
    except KindConflictError as exc:
        print(f"refused, nothing published: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ProofRefusedError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        print(exc.report, file=sys.stderr)
        return EXIT_REFUSED
    except ExportError as exc:
        print(f"export failed, nothing published: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(result.version_dir)
    print(result.report.render())
    return EXIT_OK
