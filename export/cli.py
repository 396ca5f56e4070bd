"""`monoserve export` / `python -m export`: publish a checkpoint as a verified model version.

Also `monoserve export --module FILE.py:FACTORY --spec SPEC.toml` (a user's own nn.Module) and
`monoserve import MODEL.onnx --spec SPEC.toml` (an ONNX file written by anything): export.byom,
docs/export.md "Bring your own model"; a declaration with an unknown, missing or mistyped key exits 2.

Only argparse and the stdlib at import time: `monoserve serve` builds this parser without torch.
Exit codes: 0 published; 1 refused (constraint violations, parity mismatches, an artifact that
could not be written, a name that holds another model kind without --replace-kind); 2 bad input
(missing or unreadable checkpoint, unknown kind or checkpoint format, unknown export format, bad
name/opset/tolerance, unwritable repository).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from contract.manifest import FORMATS
from export.errors import ExportInputError, bounded
from export.publish import check_repository_writable
from export.validation import normalize_formats, validate_name, validate_opset, validate_tolerance

EXIT_OK, EXIT_REFUSED, EXIT_BAD_INPUT = 0, 1, 2
MAX_PROBLEM_LINES = 20  # a hostile file's problems are listed only so far (the rest counted)


def parse_formats(text: str) -> tuple[str, ...]:
    """argparse type for --formats: a comma-separated subset of the known formats."""
    try:
        return normalize_formats(text)
    except ExportInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def precheck(args: argparse.Namespace) -> None:
    """The usage errors that need no torch, answered before importing it (ExportInputError): one list
    for `export` (a checkpoint, or --module with --spec) and `import` (an ONNX file)."""
    if args.name is not None:
        validate_name(args.name)
    for label in ("atol", "rtol"):
        if getattr(args, label) is not None:
            validate_tolerance(label, getattr(args, label))
    validate_opset(getattr(args, "opset", None))
    check_sign_key(args)
    onnx_file = getattr(args, "onnx_file", None)
    if onnx_file is not None:  # `import`
        if not onnx_file.is_file():
            raise ExportInputError(f"ONNX file not found: {onnx_file}")
    elif args.module is not None or args.spec is not None or args.state_dict is not None:
        if args.checkpoint is not None:
            raise ExportInputError("give either a checkpoint or --module with --spec, not both")
        if args.module is None or args.spec is None:
            raise ExportInputError("--module FILE.py:FACTORY and --spec SPEC.toml go together")
        if args.name is None:
            raise ExportInputError("--name is required with --module")
    elif args.checkpoint is None:
        raise ExportInputError("nothing to export: give a checkpoint, or --module FILE.py:FACTORY --spec SPEC.toml")
    elif not args.checkpoint.is_file():
        raise ExportInputError(f"checkpoint not found: {args.checkpoint}")
    check_repository_writable(args.repo)


def check_sign_key(args: argparse.Namespace) -> None:
    sign_key = getattr(args, "sign_key", None)
    if sign_key is not None and not sign_key.is_file():
        raise ExportInputError(f"signing key not found: {sign_key}")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, nargs="?", default=None,
                        help="checkpoint written by `monoserve train` (models.checkpoint); or use --module")
    parser.add_argument("--module", default=None, metavar="FILE.py:FACTORY",
                        help="your own model: FACTORY (a class or function in FILE.py, called with no arguments) "
                             "returns the nn.Module to export (needs --spec and --name; docs/export.md)")
    parser.add_argument("--state-dict", type=Path, default=None, metavar="WEIGHTS",
                        help="with --module: weights loaded into the module (torch.load(weights_only=True))")
    parser.add_argument("--spec", type=Path, default=None, metavar="SPEC.toml",
                        help="with --module: the declaration (kind, features/labels/output/monotone or mode/normalized)")
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
    importer = subparsers.add_parser(
        "import",
        help="prove and publish an ONNX file written by anything, with only a declaration (SPEC.toml)",
        description="Import an ONNX model (torch, Keras, tf2onnx, onnx.helper) as a proven model version.",
    )
    importer.add_argument("onnx_file", type=Path, metavar="MODEL.onnx", help="a self-contained ONNX file")
    importer.add_argument("--spec", type=Path, required=True, metavar="SPEC.toml", help="the declaration (docs/export.md)")
    importer.add_argument("--repo", type=Path, required=True, help="model repository root (Triton layout REPO/NAME/VERSION)")
    importer.add_argument("--name", required=True, help="model name in the repository")
    importer.add_argument("--atol", type=float, default=None, help="parity tolerance (default 1e-5)")
    importer.add_argument("--rtol", type=float, default=None, help="relative parity tolerance (default 1e-5)")
    importer.add_argument("--replace-kind", action="store_true",
                          help="publish even when NAME holds versions of another model kind")
    add_sign_argument(importer)
    importer.set_defaults(func=run_import)

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


def _failures() -> list[tuple[type[BaseException], int, Callable[[Any], list[str]]]]:
    """The one table from exception to exit code and stderr lines, for every export path (first match
    wins: the specific refusals before ExportError). Imports no torch."""
    from contract.spec import SpecError
    from export.errors import ExportError, KindConflictError, ModelRefusedError, ParityError, ProofRefusedError

    return [
        (ExportInputError, EXIT_BAD_INPUT, lambda exc: [f"error: {bounded(str(exc))}"]),
        (SpecError, EXIT_BAD_INPUT, lambda exc: [f"error: {bounded(str(exc), 4000)}"]),
        (ModelRefusedError, EXIT_REFUSED,
         lambda exc: [f"refused, nothing published: {bounded(exc.source)}:",
                      *(f"  {bounded(problem)}" for problem in exc.problems[:MAX_PROBLEM_LINES]),
                      *([f"  ... and {len(exc.problems) - MAX_PROBLEM_LINES} more"]
                        if len(exc.problems) > MAX_PROBLEM_LINES else [])]),
        (ParityError, EXIT_REFUSED,
         lambda exc: [f"refused: {len(exc.mismatches)} parity mismatch(es) against eager torch "
                      f"(atol {exc.atol:g}, rtol {exc.rtol:g}), nothing published",
                      *(f"  {mismatch}" for mismatch in exc.mismatches)]),
        (KindConflictError, EXIT_REFUSED, lambda exc: [f"refused, nothing published: {bounded(str(exc))}"]),
        (ProofRefusedError, EXIT_REFUSED, lambda exc: [f"refused: {bounded(str(exc))}", bounded(str(exc.report), 20_000)]),
        (ExportError, EXIT_REFUSED, lambda exc: [f"export failed, nothing published: {bounded(str(exc))}"]),
    ]


def _checkpoint_failures() -> list[tuple[type[BaseException], int, Callable[[Any], list[str]]]]:
    """The checkpoint path's own rows (their modules import torch)."""
    from export.core import ConstraintRefusedError
    from models.checkpoint import CheckpointError

    return [
        (CheckpointError, EXIT_BAD_INPUT, lambda exc: [f"error: {exc}"]),
        # the exception's message is capped; the CLI lists every violation
        (ConstraintRefusedError, EXIT_REFUSED,
         lambda exc: [f"refused: {exc.checkpoint}: {len(exc.violations)} constraint violation(s), nothing exported",
                      *(f"  {violation}" for violation in exc.violations)]),
    ]


def _report(work: Callable[[], list[str]], rows: Callable[[], list] = _failures, catch_all: bool = False) -> int:
    """Run one export step: its lines on stdout and EXIT_OK, or the table's lines and exit code.
    `catch_all` (a user's model or file): any other exception is a refusal with a bounded message,
    never a traceback (a malformed file must end in a message)."""
    try:
        with _sigterm_as_exit():
            lines = work()
    except Exception as exc:
        for kind, code, describe in rows():
            if isinstance(exc, kind):
                for line in describe(exc):
                    print(line, file=sys.stderr)
                return code
        if not catch_all:
            raise
        logging.getLogger(__name__).debug("export of a user model failed", exc_info=exc)
        print(f"refused, nothing published: the model could not be processed ({type(exc).__name__}: "
              f"{bounded(str(exc))})", file=sys.stderr)
        return EXIT_REFUSED
    for line in lines:
        print(line)
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    import os

    failed = _report(lambda: precheck(args) or [])
    if failed:
        return failed
    if args.module is not None:
        return _run_user_model(args, "module")

    def export() -> list[str]:
        from export.core import export_checkpoint
        from export.parity import DEFAULT_ATOL, DEFAULT_RTOL

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
        return [str(result.version_dir), result.report.render()]

    return _report(export, lambda: _checkpoint_failures() + _failures())


def run_import(args: argparse.Namespace) -> int:
    return _report(lambda: precheck(args) or []) or _run_user_model(args, "onnx")


def load_user_module(reference: str, state_dict: Path | None):
    """FILE.py:FACTORY -> FACTORY() (an nn.Module), with `state_dict` loaded (weights_only). ExportInputError."""
    import importlib.util
    import uuid

    import torch
    from torch import nn

    file_name, sep, factory_name = reference.rpartition(":")
    if not sep or not file_name or not factory_name:
        raise ExportInputError(f"--module {reference!r}: expected FILE.py:FACTORY")
    path = Path(file_name)
    if not path.is_file():
        raise ExportInputError(f"--module: file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"monoserve_user_module_{uuid.uuid4().hex}", path)
    if spec is None or spec.loader is None:
        raise ExportInputError(f"--module: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ExportInputError(f"--module: running {path} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if factory is None or not callable(factory):
        raise ExportInputError(f"--module: {path} has no class or function {factory_name!r}")
    try:
        model = factory()
    except Exception as exc:
        raise ExportInputError(f"--module: {factory_name}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ExportInputError(f"--module: {factory_name}() returned {type(model).__name__}, not a torch.nn.Module")
    if state_dict is not None:
        if not state_dict.is_file():
            raise ExportInputError(f"--state-dict: file not found: {state_dict}")
        try:
            weights = torch.load(state_dict, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ExportInputError(f"--state-dict {state_dict}: cannot be loaded with weights_only=True: {exc}") from exc
        if isinstance(weights, dict) and "state_dict" in weights and isinstance(weights["state_dict"], dict):
            weights = weights["state_dict"]
        try:
            model.load_state_dict(weights)
        except Exception as exc:
            raise ExportInputError(f"--state-dict {state_dict} does not fit {factory_name}(): {str(exc).splitlines()[0]}") from exc
    return model.eval()


def _run_user_model(args: argparse.Namespace, source: str) -> int:
    import os

    def export() -> list[str]:
        from contract.spec import load_spec

        spec = load_spec(args.spec)  # SpecError: exit 2, before torch is imported

        from export.byom import export_module, import_onnx
        from export.parity import DEFAULT_ATOL, DEFAULT_RTOL

        options = dict(atol=DEFAULT_ATOL if args.atol is None else args.atol,
                       rtol=DEFAULT_RTOL if args.rtol is None else args.rtol, replace_kind=args.replace_kind,
                       sign_key=args.sign_key, sign_key_password=os.environ.get("MONOSERVE_SIGN_KEY_PASSWORD"))
        if source == "module":
            result = export_module(load_user_module(args.module, args.state_dict), args.repo, args.name, spec, **options)
        else:
            result = import_onnx(args.onnx_file, args.repo, args.name, spec, **options)
        return [str(result.version_dir), result.render()]

    return _report(export, catch_all=True)
