"""Each peer server in a virtual environment of its own under bench/work/peers/NAME (git-ignored),
created and installed when missing; none of them is a dependency of the service.

    .venv/bin/python bench/peers/setup.py [mlserver litserve kserve pytriton bentoml rayserve]

A peer whose install fails is recorded with its error (bench/work/peers/NAME/install-error.txt) and
reported by the benchmark; the others still run.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORK = REPO_ROOT / "bench" / "work"

log = logging.getLogger("bench.peers")

# What each peer's environment needs: the server, ONNX Runtime for the same .onnx files, numpy.
REQUIREMENTS: dict[str, list[str]] = {
    "mlserver": ["mlserver", "onnxruntime", "numpy"],
    "litserve": ["litserve", "onnxruntime", "numpy"],
    "kserve": ["kserve", "onnxruntime", "numpy"],
    "pytriton": ["nvidia-pytriton", "onnxruntime", "numpy"],
    "bentoml": ["bentoml>=1.4,<1.5", "onnxruntime", "numpy"],
    "rayserve": ["ray[serve]>=2.60,<2.61", "onnxruntime", "numpy"],
}
# Interpreters to try, in order (PyTriton's stub failed under pyenv's 3.11: Debian's python3 is an alternative).
INTERPRETERS: dict[str, list[str]] = {"pytriton": ["/usr/bin/python3", sys.executable]}
MARKER = ".installed"


def venv_dir(work: Path, name: str) -> Path:
    return work / "peers" / name


def venv_python(work: Path, name: str) -> Path:
    return venv_dir(work, name) / "bin" / "python"


def install_error(work: Path, name: str) -> str | None:
    path = venv_dir(work, name) / "install-error.txt"
    return path.read_text() if path.exists() else None


def ensure_peer(work: Path, name: str, timeout: float = 900.0) -> Path | None:
    """The peer's python, installing its environment when missing; None (error recorded) on failure."""
    directory = venv_dir(work, name)
    if (directory / MARKER).exists():
        return venv_python(work, name)
    errors = []
    for interpreter in INTERPRETERS.get(name, [sys.executable]):
        if not Path(interpreter).exists():
            errors.append(f"{interpreter}: not found")
            continue
        shutil.rmtree(directory, ignore_errors=True)
        directory.parent.mkdir(parents=True, exist_ok=True)
        steps = [[interpreter, "-m", "venv", str(directory)],
                 [str(venv_python(work, name)), "-m", "pip", "install", "--quiet", *REQUIREMENTS[name]]]
        log.info("installing peer %s with %s (%s)", name, interpreter, " ".join(REQUIREMENTS[name]))
        try:
            for step in steps:
                done = subprocess.run(step, capture_output=True, text=True, timeout=timeout, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"{' '.join(step[:4])} ...: exit {done.returncode}: {done.stderr[-1500:]}")
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            errors.append(f"{interpreter}: {exc}")
            continue
        (directory / MARKER).write_text(interpreter + "\n")
        return venv_python(work, name)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "install-error.txt").write_text("\n".join(errors))
    log.warning("peer %s could not be installed: %s", name, errors[-1][-300:] if errors else "?")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peers", nargs="*", default=list(REQUIREMENTS))
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    failed = [name for name in args.peers if ensure_peer(args.work, name) is None]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
