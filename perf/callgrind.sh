#!/usr/bin/env bash
# Instructions per command of `amdahl bench`, counted by valgrind's callgrind: a figure that
# does not move with machine noise, for checking whether a change made the engine cheaper.
#
#   perf/callgrind.sh [BENCH ARGS...]       e.g. perf/callgrind.sh --seed 2 --markets 8
#
# Arguments go to `amdahl bench` verbatim, on top of a small default workload of
# `--commands 20000 --accounts 10000` (a flag you pass replaces its default). Prints one
# line: `instructions/command: X (N=..., Ir=..., ...)`, where N is the "commands" figure
# the bench printed (the commands the engine applied, liquidations fed back included).
#
# Setup is not in the figure. Two ways to keep it out (CALLGRIND_MODE):
#   toggle    one run, collecting only inside the timed loop
#             (--collect-atstart=no --toggle-collect='*timed_run*'): excludes workload
#             generation, setup deposits, engine allocation and the final state hash. It
#             still includes the bench's own per-command instrumentation (two clock reads
#             and a histogram record per command). Callgrind's collection state is per
#             thread, so this counts only the thread that runs timed_run.
#   subtract  two full runs, N commands and CALLGRIND_SMALL (default 0) commands:
#             (Ir(N) - Ir(small)) / (N - small). Counts every thread, but workload
#             generation grows with N, so its per-command cost stays in the figure.
#   auto      (default) toggle for --threads 1; subtract for any other --threads, or when
#             the toggle collected nothing (the timed_run symbol is gone).
#
# Environment: AMDAHL_BIN (use this binary instead of building), CALLGRIND_MODE,
# CALLGRIND_SMALL, CALLGRIND_TOGGLE (the function pattern, default '*timed_run*').
# Output files: perf/out/callgrind-<time>[-small].{out,json,log}; look inside with
#   callgrind_annotate --inclusive=yes perf/out/callgrind-<time>.out | head -40
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

mode=${CALLGRIND_MODE:-auto}
small=${CALLGRIND_SMALL:-0}
toggle=${CALLGRIND_TOGGLE:-*timed_run*}
case $mode in
    auto | toggle | subtract) ;;
    *) die "CALLGRIND_MODE=$mode: expected auto, toggle or subtract" ;;
esac
command -v valgrind >/dev/null || die "valgrind not found (Debian: apt-get install valgrind)"

# The default workload, under whatever the caller passed.
bench_args=("$@")
flag_value --commands "${bench_args[@]}" >/dev/null || bench_args+=(--commands 20000)
flag_value --accounts "${bench_args[@]}" >/dev/null || bench_args+=(--accounts 10000)
threads=$(flag_value --threads "${bench_args[@]}" || echo 1)

amdahl_bin
mkdir -p "$out_dir"
stem="$out_dir/callgrind-$(date +%Y%m%d-%H%M%S)"

# callgrind_run STEM ARGS... : runs the bench under callgrind with callgrind options from
# the array $cg_opts; sets $ir (total Ir from the out file) and $cmds (the JSON "commands").
callgrind_run() {
    local run=$1 status=0
    shift
    note "valgrind --tool=callgrind ${cg_opts[*]} $bin bench $*"
    valgrind --tool=callgrind --callgrind-out-file="$run.out" "${cg_opts[@]}" \
        "$bin" bench "$@" >"$run.json" 2>"$run.log" || status=$?
    if ((status != 0)); then
        # The program's own messages (valgrind's lines start with ==PID==).
        grep -v '^==[0-9]*==' "$run.log" | tail -n 20 >&2 || true
        # 1: the engine halted (the figures are still printed); anything else is a failure.
        ((status == 1)) || die "valgrind / amdahl bench failed (exit $status, log: $run.log)"
        note "amdahl bench exited 1 (engine halted?): counting anyway"
    fi
    # The out file's `totals:` line (older callgrinds write only `summary:`); one event, Ir.
    ir=$(awk '/^totals:/ {t = $2} /^summary:/ {s = $2} END {print (t != "" ? t : s)}' "$run.out")
    [[ $ir =~ ^[0-9]+$ ]] || die "no totals/summary line in $run.out"
    cmds=$(json_field "$run.json" commands) || die "no \"commands\" in $run.json"
}

per_command() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", a / b}'; }

if [[ $mode == auto ]]; then
    if [[ $threads == 1 ]]; then mode=toggle; else mode=subtract; fi
fi

if [[ $mode == toggle ]]; then
    cg_opts=(--collect-atstart=no "--toggle-collect=$toggle")
    callgrind_run "$stem" "${bench_args[@]}"
    if ((ir > 0 && cmds > 0)); then
        echo "instructions/command: $(per_command "$ir" "$cmds") (N=$cmds, Ir=$ir, timed loop" \
            "only: --toggle-collect='$toggle'; setup and workload generation excluded)"
        echo "callgrind output: $stem.out"
        exit 0
    fi
    ((cmds > 0)) || die "the bench ran no commands (N=0)"
    note "the toggle collected nothing (no function matches '$toggle'?): falling back to subtract"
fi

cg_opts=()
callgrind_run "$stem" "${bench_args[@]}"
ir_n=$ir cmds_n=$cmds
with_flag --commands "$small" "${bench_args[@]}"
callgrind_run "$stem-small" "${args[@]}"
ir_s=$ir cmds_s=$cmds
((cmds_n > cmds_s)) || die "N=$cmds_n commands is not more than the small run's $cmds_s"
echo "instructions/command: $(per_command $((ir_n - ir_s)) $((cmds_n - cmds_s))) (N=$cmds_n," \
    "Ir=$ir_n, minus Ir=$ir_s at N=$cmds_s to remove setup; workload generation per command" \
    "still included)"
echo "callgrind output: $stem.out (and $stem-small.out)"
