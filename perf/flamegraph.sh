#!/usr/bin/env bash
# A CPU flamegraph of `amdahl bench`.
#
#   perf/flamegraph.sh [BENCH ARGS...]      e.g. perf/flamegraph.sh --commands 300000 --seed 1
#
# Every argument goes to `amdahl bench` verbatim. Writes perf/out/flamegraph-<time>.{svg,
# folded,perf.data,json} and points perf/out/flamegraph-latest.svg at the new SVG.
#
# Environment:
#   AMDAHL_BIN      use this binary instead of building target/release/amdahl
#   PERF_FREQ       sampling frequency in Hz (default 999)
#   PERF_CALLGRAPH  perf's --call-graph mode (default dwarf,32768; `fp` for frame pointers,
#                   which give broken stacks here: the release build and Rust's std omit
#                   frame pointers, so most samples lose their callers)
#   PERF            the perf executable (default perf)
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

freq=${PERF_FREQ:-999}
callgraph=${PERF_CALLGRAPH:-dwarf,32768}
perf=${PERF:-perf}

# perf first: no point building for minutes on a machine that cannot profile.
command -v "$perf" >/dev/null ||
    die "perf not found: install it (Debian: apt-get install linux-perf; Ubuntu: linux-tools-\$(uname -r))"
"$perf" --version >/dev/null 2>&1 ||
    die "'$perf --version' fails: the installed perf does not run on kernel $(uname -r)"

mkdir -p "$out_dir"
probe=$(mktemp "$out_dir/probe.XXXXXX")
trap 'rm -f "$probe" "$probe.old"' EXIT
if ! "$perf" record -e cpu-clock -F "$freq" -g -o "$probe" -- true >/dev/null 2>"$probe.old"; then
    cat "$probe.old" >&2
    paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo unknown)
    die "perf cannot record here (kernel.perf_event_paranoid=$paranoid, uid $(id -u)).
  Lower the restriction as root:   sysctl kernel.perf_event_paranoid=1
  (or run as root / with CAP_PERFMON). In a container, perf_event_open may also be
  blocked by the seccomp profile."
fi
if [[ $(id -u) != 0 ]] && (($(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo 0) >= 2)); then
    note "kernel.perf_event_paranoid >= 2: user-space samples only (kernel time such as page" \
        "faults is not shown; sysctl kernel.perf_event_paranoid=1 to include it)"
fi

inferno_path=${CARGO_HOME:-$HOME/.cargo}/bin
PATH="$PATH:$inferno_path"
if ! command -v inferno-collapse-perf >/dev/null || ! command -v inferno-flamegraph >/dev/null; then
    command -v cargo >/dev/null || die "inferno is missing and cargo is not there to install it"
    note "installing inferno: cargo install inferno --locked"
    cargo install inferno --locked >&2
fi

amdahl_bin

stem="$out_dir/flamegraph-$(date +%Y%m%d-%H%M%S)"
data="$stem.perf.data"
note "recording: $perf record -e cpu-clock -F $freq --call-graph $callgraph -- $bin bench $*"
status=0
"$perf" record -e cpu-clock -F "$freq" --call-graph "$callgraph" -o "$data" \
    -- "$bin" bench "$@" >"$stem.json" 2>"$stem.record.log" || status=$?
if ((status != 0)); then
    cat "$stem.record.log" >&2
    # amdahl bench exits 1 when the engine halted (the profile is still worth looking at);
    # anything else (2: a usage error) means there is nothing to draw.
    if ((status != 1)) || [[ ! -s $data ]]; then
        die "perf record / amdahl bench failed (exit $status)"
    fi
    note "amdahl bench exited 1 (engine halted?); drawing the profile anyway"
fi
grep -h '^\[ perf record: Captured' "$stem.record.log" >&2 || true

note "rendering (perf script | inferno-collapse-perf | inferno-flamegraph)"
"$perf" script -i "$data" 2>"$stem.script.log" | inferno-collapse-perf >"$stem.folded"
[[ -s "$stem.folded" ]] || die "no stacks collected (see $stem.script.log)"
inferno-flamegraph --title "amdahl bench $*" --subtitle "perf -e cpu-clock -F $freq, call graph $callgraph" \
    <"$stem.folded" >"$stem.svg"
ln -sfn "$(basename "$stem.svg")" "$out_dir/flamegraph-latest.svg"

commands=$(json_field "$stem.json" commands 2>/dev/null || echo '?')
per_s=$(json_field "$stem.json" commands_per_s 2>/dev/null || echo '?')
echo "bench: commands=$commands commands_per_s=$per_s (under perf; full JSON in $stem.json)"
echo "top self-time frames (perf report --no-children --stdio -g none -i $data):"
"$perf" report -i "$data" --no-children --stdio -g none --percent-limit 2 2>/dev/null |
    grep -v -e '^#' -e '^$' | head -n 12 | cut -c1-160 || true
echo "flamegraph: $stem.svg ($(wc -c <"$stem.svg") bytes)"
