"""Peak memory of `monoserve verify` when a manifest lists a multi-GB file (docs/service.md, "Files").

Exports a small smoother, then lists a sparse 3 GiB file as its pt2 artifact (a format the ONNX
engine only hashes) and runs `monoserve verify` in a child process three ways: the honest version,
the 3 GiB file under the default cap (refused from fstat, nothing read), and under a 4 GiB cap
(hashed by streaming, never held). Prints and writes the children's peak RSS (ru_maxrss).

    .venv/bin/python bench/verify_rss.py [--out bench/results/verify_rss.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contract.files import BLOCK_BYTES  # noqa: E402
from contract.manifest import FileEntry, Manifest  # noqa: E402

log = logging.getLogger("verify_rss")
GIB = 1 << 30


def export_smoother(repo: Path, work: Path) -> Path:
    import torch

    from export.core import export_checkpoint
    from models.checkpoint import save_checkpoint
    from models.smoother import MonotoneSmoother, SmootherConfig

    torch.manual_seed(0)
    checkpoint = save_checkpoint(work / "smoother.ckpt", MonotoneSmoother(SmootherConfig(kernel_size=9)))
    return export_checkpoint(checkpoint, repo, name="smoother", formats=("onnx",)).version_dir


def sparse_zeros_sha256(size: int) -> str:
    digest, block = hashlib.sha256(), bytes(BLOCK_BYTES)
    for _ in range(size // BLOCK_BYTES):
        digest.update(block)
    digest.update(bytes(size % BLOCK_BYTES))
    return digest.hexdigest()


def verify(version: Path, env: dict[str, str]) -> dict:
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "monoserve.cli", "verify", str(version)], cwd=ROOT,
                             env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    last = output.strip().splitlines()[-1] if output.strip() else ""
    return {"exit": os.waitstatus_to_exitcode(status), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "seconds": round(time.perf_counter() - start, 2), "verdict": last}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "verify_rss.json")
    parser.add_argument("--size-gib", type=float, default=3.0)
    parser.add_argument("--export-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.export_into:
        export_smoother(args.export_into / "repo", args.export_into)
        return 0
    size = int(args.size_gib * GIB)
    work = Path(tempfile.mkdtemp(prefix="verify-rss-"))
    try:
        # Export in a child: ru_maxrss of a forked child starts at its parent's size, so this process
        # stays small (no torch) for the verify children's numbers to be theirs.
        subprocess.run([sys.executable, __file__, "--export-into", str(work)], check=True, cwd=ROOT)
        honest = work / "repo" / "smoother" / "1"
        big = honest.parent / "2"
        shutil.copytree(honest, big)
        with open(big / "model.pt2", "wb") as handle:
            handle.truncate(size)  # sparse: no disk used
        manifest = Manifest.read(big)
        manifest.version = 2
        manifest.files.append(FileEntry(path="model.pt2", format="pt2", sha256=sparse_zeros_sha256(size), size=size))
        (big / "manifest.json").write_text(manifest.to_json())
        results = {
            "listed_file_bytes": size,
            "honest_version": verify(honest, {}),
            "3gib_file_default_cap": verify(big, {}),
            "3gib_file_cap_4gib_streamed": verify(big, {"MONOSERVE_MAX_ARTIFACT_BYTES": str(4 * GIB)}),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, value in results.items():
        log.info("%-30s %s", name, value)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
