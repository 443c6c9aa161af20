#!/usr/bin/env bash
# tools/gpu_check.sh [OUT_DIR] — the GPU acceptance run, `make gpu-check` (docs/reliability.md):
# one command that turns a machine's first minutes with a GPU into facts, within 8 minutes.
#
#   1 detect   the GPU (nvidia-smi, else the toolkit's __nvcc_device_query); none: ONE line on
#              stderr and exit 3, before anything is built or written
#   2 setup    nvcc; the build's headers, else unpack tools/.gpu-tools/debs (make gpu-tools)
#   3 build    make ARCH=sm_XX (XX = the GPU's compute capability) of the programs, build/test_gpu
#              and build/toy_cifar
#   4 tests    build/test_gpu: every CUDA test on hardware (none may skip)
#   5 race     the stream-race stress test (tests/test_stream_race.cu), repeated
#   6 sanitize compute-sanitizer memcheck, racecheck, synccheck, initcheck over a representative
#              subset of the CUDA tests, when a compute-sanitizer is found
#   7 bench    vit_bench --quick --no-pytorch --json
#   8 train    a short vit_train on synthetic data (build/toy_cifar) with --device cpu and with
#              --device cuda in every precision mode, the metrics compared
# Each step is time-boxed with `timeout` inside one budget (GPU_CHECK_BUDGET seconds, default
# 480); a step that does not fit is marked skipped. Results go to OUT_DIR (default $OUT, else
# build/gpu-check), four files so they travel back easily: summary.md (the report),
# gpu_check.json (the same as data), bench.json (vit_bench's rows) and gpu_check.log (the
# output of every step).
#
# Exit status: 0 every step passed (a sanitizer step skipped for want of compute-sanitizer is
# not a failure: the summary says so), 1 a step failed, 2 the machine cannot build (no nvcc, a
# missing header or library, OUT_DIR not writable), 3 no GPU.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
BUDGET=${GPU_CHECK_BUDGET:-480}
START=$SECONDS

# ---- 1. detect: before anything is written -------------------------------------------------------
GPU_NAME="" GPU_CC="" GPU_DRIVER="" GPU_MEM="" why="nvidia-smi not found"
if command -v nvidia-smi >/dev/null 2>&1; then
  q=$(timeout 20 nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total \
        --format=csv,noheader 2>&1 | head -n1)
  if echo "$q" | grep -qE ', *[0-9]+\.[0-9]+ *,'; then
    IFS=',' read -r GPU_NAME GPU_CC GPU_DRIVER GPU_MEM <<<"$q"
    GPU_NAME=$(echo "$GPU_NAME" | xargs); GPU_DRIVER=$(echo "$GPU_DRIVER" | xargs)
    GPU_MEM=$(echo "$GPU_MEM" | xargs); GPU_CC=$(echo "$GPU_CC" | tr -d ' .')
  else
    why="nvidia-smi: ${q:-no answer}"
  fi
fi
if [ -z "$GPU_CC" ]; then
  # No nvidia-smi (a container may lack it): ask the CUDA driver through the toolkit's own query.
  dq=$(command -v __nvcc_device_query || echo "${CUDA_HOME:-/usr/local/cuda}/bin/__nvcc_device_query")
  if [ -x "$dq" ]; then
    cc=$(timeout 20 "$dq" 2>/dev/null | tr ',' '\n' | grep -E '^[0-9]{2,3}$' | head -n1)
    if [ -n "$cc" ]; then GPU_CC=$cc; GPU_NAME="(name unknown: no nvidia-smi)"; else why="$why; __nvcc_device_query: no device"; fi
  fi
fi
if [ -z "$GPU_CC" ]; then
  echo "gpu-check: no CUDA GPU found ($(echo "$why" | head -n1 | cut -c1-160)): nothing to check on this machine; run make gpu-check where there is an NVIDIA GPU (exit 3)" >&2
  exit 3
fi

# ---- results ---------------------------------------------------------------------------------------
OUT_DIR=${1:-${OUT:-build/gpu-check}}
mkdir -p "$OUT_DIR" 2>/dev/null && [ -w "$OUT_DIR" ] || { echo "gpu-check: cannot write to '$OUT_DIR'" >&2; exit 2; }
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG="$OUT_DIR/gpu_check.log"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vit_gpu_check.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT
: >"$LOG"
ROWS=()        # markdown rows: | step | result | seconds | detail |
JSON_STEPS=()  # {"step":..,"result":..,"seconds":..,"detail":..}
FAILED=0
TRAIN_MD=""

left() { echo $((BUDGET - (SECONDS - START))); }
jstr() { printf '%s' "$1" | tr -d '"\\' | tr '\n\t' '  '; }
record() {  # record STEP RESULT SECONDS DETAIL
  ROWS+=("| $1 | $2 | $3 | $4 |")
  JSON_STEPS+=("{\"step\": \"$1\", \"result\": \"$2\", \"seconds\": $3, \"detail\": \"$(jstr "$4")\"}")
  [ "$2" = FAIL ] && FAILED=1
  echo "gpu-check: $1: $2 ($3 s) $4"
}
# run_step NAME CAP_SECONDS CMD...: runs CMD under `timeout min(CAP, budget left - 20)`, its
# output appended to the log; sets STEP_RC (124 = timed out) and STEP_S.
run_step() {
  local name=$1 cap=$2; shift 2
  local t=$(( $(left) - 20 )); [ "$t" -gt "$cap" ] && t=$cap
  STEP_S=0
  if [ "$t" -lt 10 ]; then STEP_RC=-1; return; fi
  echo "===== $name: $* (timeout ${t}s)" >>"$LOG"
  local t0=$SECONDS
  timeout --kill-after=10 "$t" "$@" >>"$LOG" 2>&1
  STEP_RC=$?
  STEP_S=$((SECONDS - t0))
  echo "===== $name: exit $STEP_RC after ${STEP_S}s" >>"$LOG"
}
finish() {
  local total=$((SECONDS - START))
  {
    echo "# vit.cu gpu-check"
    echo
    echo "GPU: **$GPU_NAME**, compute capability ${GPU_CC:0:-1}.${GPU_CC: -1}, driver $GPU_DRIVER, $GPU_MEM; $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $total s in all (budget $BUDGET s)."
    echo
    echo "| step | result | seconds | detail |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    [ -n "$TRAIN_MD" ] && { echo; echo "$TRAIN_MD"; }
    echo
    echo "Files: bench.json (vit_bench rows), gpu_check.json (this table as data), gpu_check.log (every step's output)."
  } >"$OUT_DIR/summary.md"
  {
    echo "{"
    echo "  \"gpu\": {\"name\": \"$(jstr "$GPU_NAME")\", \"compute_capability\": \"$GPU_CC\", \"driver\": \"$(jstr "$GPU_DRIVER")\", \"memory\": \"$(jstr "$GPU_MEM")\"},"
    echo "  \"seconds\": $total, \"budget_seconds\": $BUDGET, \"failed\": $FAILED,"
    echo "  \"steps\": ["
    local i n=${#JSON_STEPS[@]}
    for ((i = 0; i < n; ++i)); do echo "    ${JSON_STEPS[$i]}$([ $i -lt $((n - 1)) ] && echo ,)"; done
    echo "  ]"
    echo "}"
  } >"$OUT_DIR/gpu_check.json"
  echo "gpu-check: $([ "$1" = 0 ] && echo passed || echo "FAILED (exit $1)"); summary in $OUT_DIR/summary.md"
  exit "$1"
}
status_of() {  # result word of STEP_RC
  case $STEP_RC in 0) echo pass ;; -1) echo skipped ;; 124|137) echo FAIL ;; *) echo FAIL ;; esac
}
detail_of() {  # a short reason for a non-zero STEP_RC
  case $STEP_RC in 0) echo "$1" ;; -1) echo "skipped: time budget spent" ;; 124|137) echo "timed out" ;; *) echo "exit $STEP_RC (see gpu_check.log)" ;; esac
}
record detect pass 0 "$GPU_NAME, sm_$GPU_CC, driver $GPU_DRIVER, $GPU_MEM"

# ---- 2. setup --------------------------------------------------------------------------------------
NVCC=${NVCC:-$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)}
if [ -z "$NVCC" ]; then
  record setup FAIL 0 "nvcc not found (install the CUDA Toolkit >= 12 or set NVCC)"
  echo "gpu-check: nvcc not found: install the CUDA Toolkit >= 12 or set NVCC=/path/to/nvcc" >&2
  finish 2
fi
have_headers() {
  for h in gtest/gtest.h nlohmann/json.hpp stb/stb_image.h cblas.h; do
    echo "#include <$h>" | ${CXX:-g++} -std=c++17 -E -x c++ - >/dev/null 2>&1 || { echo "$h"; return 1; }
  done
}
if ! missing=$(have_headers); then
  # A machine without network: the Debian packages fetched beforehand by `make gpu-tools`.
  if ls tools/.gpu-tools/debs/*.deb >/dev/null 2>&1 && command -v dpkg >/dev/null; then
    R="$ROOT/tools/.gpu-tools/root"
    for d in tools/.gpu-tools/debs/*.deb; do dpkg -x "$d" "$R"; done
    inc="$R/usr/include"; lib="$R/usr/lib/x86_64-linux-gnu"
    for d in $(find "$R" -name cblas.h -printf '%h\n'); do inc="$inc:$d"; done
    for d in $(find "$R" -name 'libopenblas.so*' -printf '%h\n' | sort -u); do lib="$lib:$d"; done
    export CPATH="$inc${CPATH:+:$CPATH}" LIBRARY_PATH="$lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
    export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    missing=$(have_headers) && record setup pass 0 "headers from tools/.gpu-tools/debs (was missing <$missing>)"
  fi
  if [ -n "$missing" ] && ! have_headers >/dev/null; then
    record setup FAIL 0 "missing <$missing>: run make gpu-tools on a machine with network and bring tools/.gpu-tools"
    echo "gpu-check: missing header <$missing>: run 'make gpu-tools' where there is network and bring tools/.gpu-tools along" >&2
    finish 2
  fi
else
  record setup pass 0 "nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), headers present"
fi

# ---- 3. build ---------------------------------------------------------------------------------------
# Objects built for another target (or the PTX-only test build of a machine without a GPU) would
# be reused by make, which does not track flags: start over when the architecture changed.
ARCH=sm_$GPU_CC
if [ "$(cat build/.gpu-check-arch 2>/dev/null)" != "$ARCH" ]; then
  rm -rf build/gpu build/gpu-test build/test_gpu vit_train vit_predict vit_bench
  mkdir -p build && echo "$ARCH" >build/.gpu-check-arch
fi
run_step build 300 make -j"$(nproc)" ARCH="$ARCH" NVCC="$NVCC" vit_train vit_predict vit_bench build/test_gpu build/toy_cifar
res=$(status_of); [ "$res" = skipped ] && res=FAIL  # nothing after it can run without a build
record build "$res" "$STEP_S" "$(detail_of "make ARCH=$ARCH")"
[ "$STEP_RC" = 0 ] || finish 1

# ---- 4. every CUDA test on the GPU ---------------------------------------------------------------------
run_step tests 150 ./build/test_gpu --gtest_brief=1
line=$(grep -E '^test_gpu: [0-9]+ passed' "$LOG" | tail -n1)
res=$(status_of)
skipped=$(echo "$line" | sed -n 's/.* \([0-9]*\) skipped.*/\1/p')
if [ "$res" = pass ] && [ "${skipped:-1}" != 0 ]; then res=FAIL; line="$line: a CUDA test skipped on a GPU machine"; fi
record tests "$res" "$STEP_S" "$(detail_of "${line:-no summary line}")$([ "$STEP_RC" != 0 ] && echo "; ${line:-}")"

# ---- 5. stream race -------------------------------------------------------------------------------------
run_step race 60 ./build/test_gpu --gtest_filter='StreamRace.*' --gtest_repeat=5 --gtest_brief=1
record race "$(status_of)" "$STEP_S" "$(detail_of "StreamRace x5: spin kernels on the copy / compute stream, results bitwise unchanged")"

# ---- 6. compute-sanitizer --------------------------------------------------------------------------------
# The toolkit's compute-sanitizer, else one found under tools/.gpu-tools. (The PyPI wheel
# nvidia-cuda-sanitizer-api that make gpu-tools fetches holds the sanitizer's API libraries but,
# as of 12.9, no compute-sanitizer front end: a toolkit install is what provides the command.)
CS=$(command -v compute-sanitizer || ls "$(dirname "$NVCC")/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer \
       /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -n1)
[ -z "$CS" ] && CS=$(find tools/.gpu-tools -type f -name compute-sanitizer -perm -u+x 2>/dev/null | head -n1)
# One test of each kernel family, plus one whole CUDA training step (cuBLAS included).
SUBSET='LayerNormKernel.*:GeluKernel.*:DropoutKernel.*:XentKernel.*:AdamKernel.*:PatchEmbedKernel.*:InputKernel.*:Attention.*:CudaModel.TrainingStepMatchesCpuTinyAdamW'
RACE_SUBSET='LayerNormKernel.*:XentKernel.*:AdamKernel.*:Attention.*:InputKernel.*:MatmulKernel.*'  # the kernels with shared memory (matmul: its column-sum partials)
for tool in memcheck racecheck synccheck initcheck; do
  if [ -z "$CS" ]; then record "sanitize-$tool" skipped 0 "no compute-sanitizer on this machine"; continue; fi
  filter=$SUBSET; [ "$tool" = racecheck ] && filter=$RACE_SUBSET
  extra=(); [ "$tool" = memcheck ] && extra=(--leak-check full)
  run_step "sanitize-$tool" 75 "$CS" --tool "$tool" "${extra[@]}" --error-exitcode 99 \
    ./build/test_gpu --gtest_filter="$filter" --gtest_brief=1
  summ=$(grep -E '========= ERROR SUMMARY' "$LOG" | tail -n1 | sed 's/=* *//')
  d=$(detail_of "${summ:-no error summary}")
  [ "$STEP_RC" = 99 ] && d="errors found: $summ (see gpu_check.log)"
  record "sanitize-$tool" "$(status_of)" "$STEP_S" "$d"
done

# ---- 7. vit_bench ------------------------------------------------------------------------------------------
run_step bench 90 ./vit_bench --quick --no-pytorch --json "$OUT_DIR/bench.json"
record bench "$(status_of)" "$STEP_S" "$(detail_of "vit_bench --quick --no-pytorch: $(grep -o '"name"' "$OUT_DIR/bench.json" 2>/dev/null | wc -l) rows in bench.json")"

# ---- 8. vit_train on synthetic data, cpu against cuda -----------------------------------------------------
# PRECISIONS: name:flags of every precision mode vit_train has (--precision).
PRECISIONS=("fp32:--precision fp32" "tf32:--precision tf32" "bf16:--precision bf16")
TRAIN_ARGS=(--preset tiny --epochs 2 --batch-size 32 --seed 7 --log-every 10)
./build/toy_cifar "$WORK/toy" 640 160 >>"$LOG" 2>&1
run_step train-cpu 60 ./vit_train --device cpu --data "$WORK/toy" --out "$WORK/cpu" "${TRAIN_ARGS[@]}"
record train-cpu "$(status_of)" "$STEP_S" "$(detail_of "tiny preset, 640 + 160 synthetic images, 2 epochs")"
TRAIN_MD="### vit_train, --device cuda against --device cpu (tiny preset, synthetic data, 2 epochs)

| run | epoch | train loss | train acc | test loss | test acc | vs cpu |
|---|---|---|---|---|---|---|"
rows_of() { awk -F, 'NR > 1 { printf "%s %s %s %s %s\n", $1, $2, $3, $4, $5 }' "$1"; }
[ -f "$WORK/cpu/metrics.csv" ] && while read -r e l a tl ta; do
  TRAIN_MD+=$'\n'"| cpu | $e | $l | $a | $tl | $ta | |"
done < <(rows_of "$WORK/cpu/metrics.csv")
for p in "${PRECISIONS[@]}"; do
  name=${p%%:*}; flags=${p#*:}
  # Tolerances on the losses (relative) and accuracies (absolute), per precision: FP32 differs
  # from the CPU only by summation order; TF32 rounds GEMM inputs to 10-bit mantissas, BF16
  # stores GEMM operands with 8-bit mantissas (the BF16 learning test allows 2% on the loss).
  case $name in fp32) rtol=1e-3; atol_acc=0.02 ;; tf32) rtol=3e-2; atol_acc=0.06 ;; *) rtol=5e-2; atol_acc=0.08 ;; esac
  # shellcheck disable=SC2086
  run_step "train-cuda-$name" 60 ./vit_train --device cuda $flags --data "$WORK/toy" --out "$WORK/$name" "${TRAIN_ARGS[@]}"
  res=$(status_of); d=$(detail_of "")
  if [ "$STEP_RC" = 0 ] && [ -f "$WORK/cpu/metrics.csv" ]; then
    verdict=$(paste -d, <(rows_of "$WORK/$name/metrics.csv" | tr ' ' ,) <(rows_of "$WORK/cpu/metrics.csv" | tr ' ' ,) | \
      awk -F, -v r="$rtol" -v a="$atol_acc" '
        function rel(x, y) { d = x - y; if (d < 0) d = -d; m = y < 0 ? -y : y; return d / (m > 1e-12 ? m : 1e-12) }
        function ab(x) { return x < 0 ? -x : x }
        { ok = rel($2, $7) <= r && rel($4, $9) <= r && ab($3 - $8) <= a && ab($5 - $10) <= a
          printf "%s %s %s %s %s %s\n", $1, $2, $3, $4, $5, (ok ? "ok" : "OFF") }')
    while read -r e l ac tl ta v; do
      TRAIN_MD+=$'\n'"| cuda $name | $e | $l | $ac | $tl | $ta | $v |"
    done <<<"$verdict"
    if [ -z "$verdict" ] || echo "$verdict" | grep -q OFF; then
      res=FAIL; d="metrics differ from --device cpu beyond rtol $rtol (loss) / $atol_acc (acc)"
    else
      d="within rtol $rtol (loss), $atol_acc (acc) of --device cpu"
    fi
  elif [ "$STEP_RC" = 0 ]; then
    d="no cpu run to compare with"
  fi
  record "train-cuda-$name" "$res" "$STEP_S" "$d"
done

finish $FAILED
