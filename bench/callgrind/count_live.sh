#!/bin/bash
# Instructions per request of a live server under callgrind: started with instrumentation off,
# warmed up, then counted over exactly N requests of bench/callgrind/client.py. Run from the
# repository root:
#   bench/callgrind/count_live.sh TAG PORT N CONNS PATH BODY CTYPE ACCEPT READY_PATH -- SERVER ARGV...
#   e.g. bench/callgrind/count_live.sh ceiling 18502 1024 16 /classify bench/work/bodies/classify_1_json.json \
#          application/json application/json /readyz -- .venv/bin/python -m uvicorn ceiling_server:app \
#          --app-dir bench --port 18502 --no-access-log
# `monoserve serve` execs `python -m service.server` with OPENBLAS_NUM_THREADS and malloc settings:
# run that module directly with the same environment (callgrind follows one process).
# Prints "TAG instructions-per-request" (user space: the kernel's share is not counted).
set -euo pipefail
tag=$1; port=$2; n=$3; conns=$4; path=$5; body=$6; ctype=$7; accept=$8; ready=$9; shift 10
out=bench/work/callgrind; mkdir -p $out; rm -f $out/$tag.out*
PY=${PYTHON:-.venv/bin/python}
PYTHONPATH=$PWD valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$out/$tag.out "$@" > $out/$tag.log 2>&1 &
vg=$!
for _ in $(seq 900); do sleep 1; curl -s -o /dev/null -f 127.0.0.1:$port$ready && break; done
$PY bench/callgrind/client.py 127.0.0.1 $port "$path" $body $ctype $((conns * 16)) $conns $accept  # warm-up
callgrind_control -i on $vg > /dev/null 2>&1
$PY bench/callgrind/client.py 127.0.0.1 $port "$path" $body $ctype $n $conns $accept
callgrind_control -i off $vg > /dev/null 2>&1
callgrind_control -d $vg > /dev/null 2>&1
sleep 2; kill $vg; wait $vg || true
total=$(grep -h "^totals:" $out/$tag.out* | awk '{s+=$2} END {printf "%d", s}')
echo "$tag $((total / n))"
