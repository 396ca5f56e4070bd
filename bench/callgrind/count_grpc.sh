#!/bin/bash
# Instructions per gRPC ModelInfer call of a live server under callgrind (every thread of the
# process): started with instrumentation off, warmed up, then counted over exactly N calls of
# bench/callgrind/grpc_client.py, C in flight. Run from the repository root:
#   bench/callgrind/count_grpc.sh TAG GRPC_PORT N C BODY -- SERVER ARGV...
#   e.g. env MONOSERVE_REPO=$PWD/bench/work/repo MONOSERVE_PORT=18701 MONOSERVE_GRPC_PORT=18702 \
#          OPENBLAS_NUM_THREADS=1 MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456 \
#          bench/callgrind/count_grpc.sh service 18702 1024 1 bench/work/bodies/classify_1_oipbin.grpc \
#          -- .venv/bin/python -m service.server
#   grpc.aio's own floor: ... count_grpc.sh echo 18731 1024 1 bench/work/grpc_floor_body.bin \
#          -- .venv/bin/python bench/grpc_floor.py --serve aio-uvloop:18731
# The body files come from bench/prepare.py (`make bench` writes them) and bench/grpc_floor.py.
# Valgrind follows one process: start a peer's server script itself, not a launcher that execs it.
# Prints "TAG instructions-per-call" (user space: the kernel's share is not counted).
set -euo pipefail
tag=$1; port=$2; n=$3; conns=$4; body=$5; shift 6
out=bench/work/callgrind; mkdir -p $out; rm -f $out/$tag.out*
PY=${PYTHON:-.venv/bin/python}
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$out/$tag.out "$@" > $out/$tag.log 2>&1 &
vg=$!
$PY bench/callgrind/grpc_client.py 127.0.0.1:$port $body $((conns * 16 + 64)) $conns --wait 900  # warm-up
callgrind_control -i on $vg > /dev/null 2>&1
$PY bench/callgrind/grpc_client.py 127.0.0.1:$port $body $n $conns
callgrind_control -i off $vg > /dev/null 2>&1
callgrind_control -d $vg > /dev/null 2>&1
sleep 2; kill $vg; wait $vg || true
total=$(grep -h "^totals:" $out/$tag.out* | awk '{s+=$2} END {printf "%d", s}')
echo "$tag $((total / n))"
