#!/usr/bin/env bash
# One short, prepared GPU session (see benchmarks/README.md): throughput, the accuracy runs, then the
# fields benchmark (the methods' field maps against the annotators' masks, and their speed).
# Run from the repository root on a machine with a GPU:
#   OUT=/some/dir DATA=<labeled root> bash benchmarks/gpu_run.sh
# Python packages missing there may come as wheels in .whl/ (installed into /tmp/site).
# SMOKE=1 runs the same steps with tiny sizes (to check the script on a CPU first).
set -uo pipefail
OUT=${OUT:-benchmarks/work/gpu}
DATA=${DATA:-../shared/data/bbbc010/labeled}
FIELDS=${FIELDS:-$(dirname "$DATA")/fields}
DEVICE=${DEVICE:-cuda}
SCRATCH=${SCRATCH:-/tmp/wormflow-bench}
mkdir -p "$OUT" "$SCRATCH"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
        export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ "${SMOKE:-0}" = 1 ]; then
    TP_ARGS=(--n 32 --side 256 --report-n 16 --batch 32 --train-n 32)
    ACC_ARGS=(--smoke --epochs-scale 0.02 --seeds 0)
    FIELDS_ARGS=(--smoke --epochs-scale 0.02 --max-wells 1)
else
    TP_ARGS=(--n 8192 --report-n 512 --batch 1024 --reps 2 --train-n 4096 --train-steps 2)
    ACC_ARGS=()
    FIELDS_ARGS=()
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"
start=$(date +%s)
STAGES=${STAGES:-throughput accuracy fields}
python3 -c "import jsonschema" 2>/dev/null || echo "note: jsonschema missing, configs are not validated here"
if [[ " $STAGES " == *" throughput "* ]]; then
timeout "${TP_TIMEOUT:-240}" "$PY" benchmarks/throughput.py --device "$DEVICE" --data "$DATA" --work "$SCRATCH/tp" \
    --json "$OUT/throughput-gpu.json" "${TP_ARGS[@]}" > "$OUT/throughput.log" 2>&1
echo "throughput: rc=$? after $(($(date +%s) - start)) s"
grep -E '^\[(env|decode|score|train)\]' "$OUT/throughput.log"
tail -3 "$OUT/throughput.log"
fi
if [[ " $STAGES " == *" accuracy "* ]]; then
timeout "${ACC_TIMEOUT:-330}" "$PY" benchmarks/accuracy.py run --device "$DEVICE" --data "$DATA" --work "$SCRATCH/acc" \
    "${ACC_ARGS[@]}" > "$OUT/accuracy.log" 2>&1
echo "accuracy: rc=$? after $(($(date +%s) - start)) s"
grep -E '^\[accuracy\]' "$OUT/accuracy.log" | tail -40
cp "$SCRATCH/acc/raw.json" "$OUT/accuracy-raw.json" 2>/dev/null
tail -5 "$OUT/accuracy.log"
fi
if [[ " $STAGES " == *" fields "* ]]; then
timeout "${FIELDS_TIMEOUT:-420}" "$PY" benchmarks/fields.py "$FIELDS" --device "$DEVICE" --labeled "$DATA" --work "$SCRATCH/fields" \
    --json "$OUT/fields-gpu.json" --md "$OUT/fields-gpu.md" --sheet "$OUT/fields-gpu-worst.png" "${FIELDS_ARGS[@]}" \
    > "$OUT/fields.log" 2>&1
echo "fields: rc=$? after $(($(date +%s) - start)) s"
grep -E '^\[fields\]' "$OUT/fields.log" | tail -10
sed -n '/^## Learned/,$p' "$OUT/fields-gpu.md" 2>/dev/null
tail -5 "$OUT/fields.log"
fi
