#!/bin/bash
# Instructions per request of an ASGI app driven in-process (bench/callgrind/inprocess.py), counted
# by callgrind only over the N measured requests. Run from the repository root:
#   bench/callgrind/count_inprocess.sh APP WORKLOAD N TAG [VAR=VALUE ...]
#   e.g. bench/callgrind/count_inprocess.sh hot classify_1_json 640 hot MONOSERVE_INLINE_MAX_INFERENCE_US=1000000
# prints "TAG instructions-per-request"; the callgrind file is bench/work/callgrind/TAG.out*.
set -euo pipefail
app=$1; workload=$2; n=$3; tag=$4; shift 4
out=bench/work/callgrind; mkdir -p $out
PY=${PYTHON:-.venv/bin/python}
fifo=$out/$tag.fifo; rm -f $fifo $out/$tag.out*; mkfifo $fifo
env "$@" PYTHONPATH=$PWD valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$out/$tag.out \
  $PY bench/callgrind/inprocess.py $app $workload $n $fifo > $out/$tag.log 2>&1 &
vg=$!
until grep -q WARM $out/$tag.log; do sleep 1; kill -0 $vg 2>/dev/null || { echo "$tag failed"; tail -5 $out/$tag.log; exit 1; }; done
callgrind_control -i on $vg > /dev/null 2>&1; echo go > $fifo
until grep -q DONE $out/$tag.log; do sleep 1; done
callgrind_control -i off $vg > /dev/null 2>&1; echo stop > $fifo
wait $vg
total=$(grep -h "^totals:" $out/$tag.out* | awk '{s+=$2} END {printf "%d", s}')
echo "$tag $((total / n))"
