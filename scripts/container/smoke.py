#!/usr/bin/env python3
"""Answers of a running monoserve container, checked over HTTP on loopback (standard library only).

    smoke.py --url http://127.0.0.1:PORT [--smoother-version N] [--data DIR]

Checks /readyz, /docs (its script and stylesheet served by the container itself: no CDN),
/smooth (a constant signal comes back unchanged; a real series stays within its
own range, as any normalized nonnegative kernel guarantees; a bad request gets a 400 with an
error message) and /classify (one probability in [0, 1] per instance). Exits 1 on the first
failure, naming what was wrong.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class CheckFailed(Exception):
    pass


def request(url: str, payload: Any | None = None) -> tuple[int, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:
            return error.code, body.decode(errors="replace")


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def flat(values: Any) -> list[float]:
    return [float(v) for v in values]


def check_ready(url: str) -> None:
    status, body = request(f"{url}/readyz")
    expect(status == 200, f"GET /readyz: status {status}, body {body!r}")
    print(f"ok   GET /readyz -> 200 {json.dumps(body)[:120]}")


def check_docs(url: str) -> None:
    req = urllib.request.Request(f"{url}/docs")
    with urllib.request.urlopen(req, timeout=30) as response:
        expect(response.status == 200, f"GET /docs: status {response.status}")
        html = response.read().decode()
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+\.(?:js|css))['"]""", html)
    expect(bool(assets), "GET /docs: no script or stylesheet referenced")
    remote = [a for a in assets if re.match(r"^(https?:)?//", a)]
    expect(not remote, f"GET /docs loads assets from outside the container: {remote}")
    for asset in assets:
        with urllib.request.urlopen(f"{url}{asset}", timeout=30) as response:
            size = len(response.read())
            expect(response.status == 200 and size > 1000, f"GET {asset}: status {response.status}, {size} bytes")
    print(f"ok   GET /docs -> 200, assets served locally: {', '.join(assets)}")


def check_smooth(url: str, nile: list[float], smoother_version: int | None) -> None:
    constant = [7.25] * 50
    status, body = request(f"{url}/smooth", {"signal": constant})
    expect(status == 200, f"POST /smooth (constant): status {status}, body {body!r}")
    smoothed = flat(body["smoothed"])
    expect(len(smoothed) == len(constant), f"/smooth: {len(smoothed)} values back for {len(constant)} sent")
    worst = max(abs(a - b) for a, b in zip(smoothed, constant))
    expect(worst <= 1e-4 * 7.25, f"/smooth: a constant 7.25 signal came back changed (max error {worst})")
    if smoother_version is not None:
        expect(body.get("version") == smoother_version,
               f"/smooth: served version {body.get('version')}, expected {smoother_version}")
    print(f"ok   POST /smooth constant x50 -> unchanged (max error {worst:.2e}), "
          f"model {body.get('model')} v{body.get('version')} mode {body.get('mode')}")

    status, body = request(f"{url}/smooth", {"signal": nile})
    expect(status == 200, f"POST /smooth (Nile): status {status}, body {body!r}")
    smoothed = flat(body["smoothed"])
    low, high = min(nile), max(nile)
    expect(len(smoothed) == len(nile), f"/smooth: {len(smoothed)} values back for {len(nile)} sent")
    outside = [v for v in smoothed if not (low - 1e-3 <= v <= high + 1e-3) or not math.isfinite(v)]
    expect(not outside, f"/smooth: values outside the signal's range [{low}, {high}]: {outside[:5]}")
    roughness = lambda xs: sum(abs(b - a) for a, b in zip(xs, xs[1:]))  # noqa: E731
    expect(roughness(smoothed) < roughness(nile),
           f"/smooth: output not smoother than the input ({roughness(smoothed)} >= {roughness(nile)})")
    print(f"ok   POST /smooth Nile x{len(nile)} -> within [{low:g}, {high:g}], total variation "
          f"{roughness(nile):.0f} -> {roughness(smoothed):.0f}")

    status, body = request(f"{url}/smooth", {"signal": []})
    expect(status == 400, f"POST /smooth (empty signal): status {status}, expected 400; body {body!r}")
    expect(isinstance(body, dict) and "error" in body, f"/smooth (empty): no 'error' in {body!r}")
    print(f"ok   POST /smooth [] -> 400 {body['error'][:80]!r}")


def check_classify(url: str, rows: list[list[float]]) -> None:
    status, body = request(f"{url}/classify", {"instances": rows})
    expect(status == 200, f"POST /classify: status {status}, body {body!r}")
    scores = body["scores"]
    expect(len(scores) == len(rows), f"/classify: {len(scores)} scores for {len(rows)} instances")
    values = [float(s) for row in scores for s in (row if isinstance(row, list) else [row])]
    expect(all(0.0 <= v <= 1.0 for v in values), f"/classify: scores outside [0, 1]: {values}")
    print(f"ok   POST /classify x{len(rows)} -> scores in [0, 1] {[round(v, 4) for v in values]}, "
          f"labels {body.get('labels')}, model {body.get('model')} v{body.get('version')}")

    status, body = request(f"{url}/classify", {"instances": [[1.0, 2.0]]})
    expect(status == 400, f"POST /classify (2 features): status {status}, expected 400; body {body!r}")
    print(f"ok   POST /classify 2 features -> 400 {body['error'][:80]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--smoother-version", type=int)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "data")
    args = parser.parse_args()
    with open(args.data / "nile.csv", newline="") as f:
        nile = [float(row["value"]) for row in csv.DictReader(f)]
    with open(args.data / "spam7.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [[float(row[name]) for name in reader.fieldnames if name != "spam"] for _, row in zip(range(4), reader)]
    try:
        check_ready(args.url)
        check_docs(args.url)
        check_smooth(args.url, nile, args.smoother_version)
        check_classify(args.url, rows + [[0.0] * len(rows[0])])
    except (CheckFailed, KeyError, TypeError, ValueError, urllib.error.URLError) as exc:
        print(f"FAIL {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
