# Shared helpers for perf/flamegraph.sh and perf/callgrind.sh. Sourced, not run.
# shellcheck shell=bash

perf_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$perf_dir/.." && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
out_dir="$perf_dir/out"

die() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

note() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
}

# Sets $bin to the amdahl binary: $AMDAHL_BIN if set, else a fresh release build.
amdahl_bin() {
    if [[ -n ${AMDAHL_BIN:-} ]]; then
        [[ -x $AMDAHL_BIN ]] || die "AMDAHL_BIN=$AMDAHL_BIN is not an executable file"
        bin=$AMDAHL_BIN
        return
    fi
    command -v cargo >/dev/null || die "cargo not found (or set AMDAHL_BIN to a built amdahl binary)"
    note "building: CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release -p amdahl-server"
    (cd "$repo_root" && CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release -p amdahl-server) >&2 ||
        die "the release build failed (fix it, or set AMDAHL_BIN to an already built amdahl)"
    local target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target="$repo_root/$target"
    bin="$target/release/amdahl"
    [[ -x $bin ]] || die "build finished but $bin is missing"
}

# flag_value NAME ARGS...: prints the value of --NAME in ARGS (either `--NAME V` or
# `--NAME=V`, the last one wins); returns 1 if absent.
flag_value() {
    local name=$1 found=1 value=""
    shift
    while (($#)); do
        case $1 in
            "$name")
                if (($# > 1)); then
                    value=$2
                    found=0
                    shift
                fi
                ;;
            "$name"=*)
                value=${1#"$name"=}
                found=0
                ;;
        esac
        shift
    done
    ((found == 0)) || return 1
    printf '%s\n' "$value"
}

# with_flag NAME VALUE ARGS...: sets the array $args to ARGS with every --NAME replaced by
# `--NAME VALUE`, or with `--NAME VALUE` appended if ARGS has none (clap rejects a flag
# given twice, so defaults must not be stacked on top of the caller's).
with_flag() {
    local name=$1 value=$2 replaced=0
    shift 2
    args=()
    while (($#)); do
        case $1 in
            "$name")
                shift
                ((replaced)) || args+=("$name" "$value")
                replaced=1
                ;;
            "$name"=*)
                ((replaced)) || args+=("$name" "$value")
                replaced=1
                ;;
            *) args+=("$1") ;;
        esac
        (($# == 0)) || shift
    done
    ((replaced)) || args+=("$name" "$value")
}

# json_field FILE FIELD: a top-level number from the JSON object `amdahl bench` printed.
json_field() {
    local file=$1 field=$2
    if command -v jq >/dev/null; then
        jq -er --arg f "$field" '.[$f]' "$file"
    elif command -v python3 >/dev/null; then
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$file" "$field"
    else
        # serde_json's pretty printer: top-level keys are indented by exactly two spaces.
        sed -n "s/^  \"$field\": \\([0-9.]*\\),\\{0,1\\}\$/\\1/p" "$file" | grep . ||
            die "no top-level \"$field\" in $file"
    fi
}
