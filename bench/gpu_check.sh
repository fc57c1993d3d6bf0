#!/usr/bin/env bash
# The one-shot GPU check. From the repository root, on a machine with a CUDA GPU:
#
#   bash bench/gpu_check.sh              # < 8 min on an H200
#   bash bench/gpu_check.sh --dry-run    # the same stages, tiny, on a CPU (tests/test_gpu_check_script.py)
#
# Stages, each time-limited; one failing does not stop the others:
#   setup     install the wheels carried in .whl/ (never torch or triton: the machine's own are used)
#   tests     the test suite on the GPU: every kernel against the reference, fp32 and bf16, > 2^31 elements
#   bench     the kernel and training-step benchmarks (bench/), spikingjelly 0.0.0.0.14 as the peer
#   bench-sj2 the LIF benchmarks again with spikingjelly 2.0.0 as the peer (a session of its own)
#   epoch     a CIFAR-10-sized epoch at batch 64 and 512: the notebook's code and DataLoader against
#             train.py's fastest path (data on the device, reduce-overhead)
#   train     `train.py --compile-mode reduce-overhead --precision bf16`, 2 epochs of 1,024 synthetic
#             images on the GPU (the first compiles)
#   graphs    the graph-break count of torch.compile(BasicCSNN)
#   peers     Linear + LIF against snnTorch, Norse, sinabs and both spikingjellys (bench/test_libraries.py),
#             each eager and compiled, with the peers' wheels carried in .whl/peers
#   memory    what a training step keeps for backward and its peak memory, eager and compiled: the seed
#             notebook's network against BasicCSNN (bench/memory.py)
#   lean      spikingjelly's zoo unconverted, st.from_spikingjelly(lean=False) and lean=True: saved bytes
#             and torch.cuda.max_memory_allocated of one training step, T=4 (bench/lean_memory.py)
# GPU_CHECK_STAGES="setup peers memory lean" (names, space-separated) runs only those stages: the limits
# of all add up to more than one 600 s device call, so the check is two calls (bench/README.md).
# Everything goes under $OUT when it is set, else bench/results/: gpu_check.log (all output), the
# results JSON, tables.md and roofline.png (bench/report.py), train.tar.gz (train.py's metrics and the
# lean stage's JSON), memory_*.json and memory_saved_bytes.png, summary.txt. The last thing printed is
# a short table: the headline figures and each stage's outcome.
set -u -o pipefail
cd "$(dirname "$0")/.."

DRY=0
[[ "${1:-}" == "--dry-run" || "${GPU_CHECK_DRY:-0}" == 1 ]] && DRY=1
OUT_DIR="${OUT:-bench/results}"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d)"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
export PYTHONUNBUFFERED=1 SNN_BENCH_OUT="$OUT_DIR" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if (( DRY )); then
    # Tiny sizes, dynamo without inductor (no C++ builds on a CPU), one thread: seconds, not minutes.
    export SNN_BENCH_TINY=1 SNN_BENCH_COMPILE_BACKEND=eager SNN_BENCH_THREADS=1 SNN_BENCH_CPU_SECONDS=0.01
    # the peers' compiled rows take the path of a spent compile budget: each says why it is left out
    export SNN_BENCH_PEER_COMPILE_SECONDS=0
    DEVICE=cpu TESTS=(tests/test_lif_scan.py -k "beyond_int32 or divides_by_tau")
    BENCH=(--benchmark-only) TRAIN=(--device cpu --epochs 1 --max-steps 2 --T 2 --batch-size 8)
    MEMORY=(--steps 2)
    LEAN=(--models lif_fashionmnistnet_64 --device cpu)
    # bounds against a hang, with room for a machine whose other cores run the rest of the test suite
    LIMIT=(150 150 150 150 150 150 150 150 150 150)
else
    # Not here: the AOT compiles for sm_80/sm_90 on the CPU (the GPU itself checks that), the dry run
    # of this very script, and the CPU-only data, step and train.py tests (CI runs them; here they
    # would take a minute of the limit and say nothing about the GPU).
    DEVICE=cuda TESTS=(tests --ignore=tests/test_aot_compile.py --ignore=tests/test_gpu_check_script.py
                       --ignore=tests/test_data.py --ignore=tests/test_objective.py --ignore=tests/test_train.py)
    BENCH=(--benchmark-disable)
    TRAIN=(--device cuda --compile-mode reduce-overhead --epochs 2)
    MEMORY=(--steps 8,32 --peak)
    LEAN=(--device cuda --peak)
    # setup tests bench bench-sj2 epoch train graphs | peers memory lean: 8 | 6 min at most
    LIMIT=(30 100 130 45 100 45 30 240 80 45)
    # The peers' compiles stop after this many seconds, leaving the peers stage the time for every
    # case's eager rows (bench/test_libraries.py).
    export SNN_BENCH_PEER_COMPILE_SECONDS=90
fi

STATUS=()
stage() {  # stage NAME LIMIT_SECONDS COMMAND...: run it time-limited, log all output, keep the outcome
    local name=$1 limit=$2 start=$SECONDS rc outcome
    shift 2
    if [[ -n "${GPU_CHECK_STAGES:-}" && " $GPU_CHECK_STAGES " != *" $name "* ]]; then
        STATUS+=("$(printf '%-10s %-8s' "$name" "skipped: not in GPU_CHECK_STAGES")")
        return
    fi
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$WORK/stage.log" | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    outcome=$(case $rc in 0) echo ok;; 124|137) echo "TIMEOUT";; *) echo "rc=$rc";; esac)
    # The stage's own last word: pytest's counts, train.py's last epoch time, the graph-break count.
    STATUS+=("$(printf '%-10s %-8s %4ss  %s' "$name" "$outcome" $((SECONDS - start)) "$(grep -E \
        '(passed|failed|error|graph breaks|Epoch [0-9]+/)' "$WORK/stage.log" | tail -1 | sed -E \
        's/.*(Epoch [0-9]+\/[0-9]+).*\| ([0-9.]+ s, [0-9]+ img\/s).*/\1: \2/' | cut -c1-90)")")
}

setup() {
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>/dev/null
    if ls .whl/*.whl .whl/*/*.whl 2>/dev/null | grep -Eq '/(torch|triton)-'; then
        echo "refusing .whl/: torch and triton must be the machine's own"; return 1
    fi
    local wheels=(.whl/*.whl)
    if [[ -e "${wheels[0]}" ]]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$WORK/site" "${wheels[@]}" || return 1
    fi
    # snnTorch, Norse, sinabs and theirs, for the peers stage only; built for the GPU machine's Python
    # (h5py is binary), so the dry run uses the peers installed here, if any.
    if (( ! DRY )) && compgen -G ".whl/peers/*.whl" > /dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/peers" .whl/peers/*.whl || return 1
    fi
    if compgen -G ".whl/sj2/*.whl" > /dev/null; then  # spikingjelly 2.0.0 + loguru, for bench-sj2 only
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/sj2" .whl/sj2/*.whl || return 1
    fi
    "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda',
torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'unavailable')"
}

export -f setup
export PY WORK DRY
stage setup "${LIMIT[0]}" bash -c setup
# Only packages the machine lacks are carried (bench/README.md), so these shadow none of its own.
[[ -d "$WORK/site" ]] && export PYTHONPATH="$PYTHONPATH:$WORK/site"
SJ2="$WORK/sj2"
[[ -d "$SJ2" ]] || SJ2=bench/.sj2

stage tests "${LIMIT[1]}" "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
stage bench "${LIMIT[2]}" "$PY" -m pytest bench -q -p no:cacheprovider -k "not train_epoch" \
    --ignore=bench/test_libraries.py "${BENCH[@]}"
if [[ -d "$SJ2" ]]; then
    # A session of its own: spikingjelly 2.0.0 is the package `spikingjelly` too. Our kernels and the
    # eager baseline are measured again beside it, so its ratios come from one run.
    stage bench-sj2 "${LIMIT[3]}" env PYTHONPATH="$SJ2:$PYTHONPATH" "$PY" -m pytest bench/test_kernels.py -q \
        -p no:cacheprovider -k "copy or lif_scan" "${BENCH[@]}"
else
    STATUS+=("$(printf '%-10s %-8s' bench-sj2 "skipped: no .whl/sj2 or bench/.sj2 (bench/README.md)")")
fi
stage epoch "${LIMIT[4]}" "$PY" -m pytest bench/test_end_to_end.py -q -p no:cacheprovider -k train_epoch "${BENCH[@]}"
stage train "${LIMIT[5]}" "$PY" train.py --surrogate sigmoid --dataset synthetic --precision bf16 \
    --out "$WORK/train" "${TRAIN[@]}"
stage graphs "${LIMIT[6]}" "$PY" bench/graph_breaks.py --device "$DEVICE"
# Not pytest-benchmark: the suite times all implementations of a case itself. spikingjelly 2.0.0 runs
# in a process of its own, started with $SJ2 first on its path (bench/remote.py).
stage peers "${LIMIT[7]}" env PYTHONPATH="$PYTHONPATH:$WORK/peers" SNN_BENCH_SJ2="$SJ2" "$PY" -m pytest \
    bench/test_libraries.py -q -p no:cacheprovider
stage memory "${LIMIT[8]}" "$PY" bench/memory.py --device "$DEVICE" --out "$OUT_DIR" "${MEMORY[@]}"
# The rows are printed into the log as they come; the JSON goes into train.tar.gz (the files that come
# back from a device are few).
stage lean "${LIMIT[9]}" "$PY" bench/lean_memory.py --T 4 --no-csnn --out "$WORK/lean" "${LEAN[@]}"
KEPT=()
for dir in train lean; do [[ -d "$WORK/$dir" ]] && KEPT+=("$dir"); done
(( ${#KEPT[@]} )) && tar -czf "$OUT_DIR/train.tar.gz" --exclude='*.pt' -C "$WORK" "${KEPT[@]}"  # metrics, not checkpoints

RESULTS=$(ls -t "$OUT_DIR"/20*.json 2>/dev/null | head -1)
{
    [[ -n "$RESULTS" ]] && "$PY" bench/report.py "$RESULTS" --plot "$OUT_DIR/roofline.png" > "$OUT_DIR/tables.md"
    echo
    echo "=== GPU check summary ($( (( DRY )) && echo "DRY RUN, CPU" || echo "$DEVICE"), ${SECONDS}s)"
    [[ -n "$RESULTS" ]] && "$PY" bench/report.py "$RESULTS" --headline
    printf '%s\n' "${STATUS[@]}"
} 2>&1 | tee "$OUT_DIR/summary.txt" | tee -a "$LOG"
rm -rf "$WORK"
