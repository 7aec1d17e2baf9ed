//! End to end: the real `amdahl` binary, run as an operator runs it.

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_amdahl")).arg("bench").args(args).output().expect("runs")
}

fn field<'a>(json: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    json.get(key).unwrap_or_else(|| panic!("no {key:?} in {json}"))
}

const SMALL: [&str; 8] =
    ["--commands", "20000", "--accounts", "500", "--markets", "2", "--mark-every", "50"];

#[test]
fn the_same_seed_gives_the_same_events_and_state() {
    let run = |seed: &str| {
        let mut args = SMALL.to_vec();
        args.extend(["--seed", seed, "--audit-cycle", "8"]);
        let out = bench(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(field(&json, "halted"), &serde_json::Value::Bool(false));
        assert!(field(&json, "commands_per_s").as_f64().unwrap() > 0.0);
        assert!(field(&json, "events").as_u64().unwrap() > 20_000);
        for percentile in ["p50", "p99", "p99.9", "max"] {
            assert!(field(field(&json, "command_latency_ns"), percentile).as_u64().is_some());
        }
        (field(&json, "event_hash").clone(), field(&json, "state_hash").clone())
    };
    let (events_a, state_a) = run("7");
    let (events_b, state_b) = run("7");
    assert_eq!((&events_a, &state_a), (&events_b, &state_b), "a run must be reproducible");
    let (events_c, _) = run("8");
    assert_ne!(events_a, events_c, "another seed is another workload");
}

#[test]
fn every_topology_gives_the_serial_engines_events_and_state() {
    // The serial engine, a 2-thread pipeline publishing on its helper, and a 3-thread one
    // publishing on the core thread, in one process, on one workload that liquidates.
    let mut args = SMALL.to_vec();
    args.extend(["--seed", "3", "--mark-step", "40", "--positions", "400"]);
    args.extend(["--threads", "1,2,3", "--publish-on", "0"]);
    let out = bench(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let runs = field(&json, "runs").as_array().expect("one entry per topology");
    assert_eq!(runs.len(), 3);
    for (run, engine) in runs.iter().zip(["serial", "pipeline", "pipeline"]) {
        assert_eq!(field(run, "engine"), engine);
        assert_eq!(field(run, "halted"), &serde_json::Value::Bool(false));
        assert_eq!(field(run, "commands").as_u64(), Some(20_000));
        assert_eq!(field(run, "events"), field(&runs[0], "events"), "{run}");
        assert_eq!(field(run, "event_hash"), field(&runs[0], "event_hash"), "{run}");
        assert_eq!(field(run, "state_hash"), field(&runs[0], "state_hash"), "{run}");
        assert!(field(field(run, "mark_tick_ns"), "count").as_u64().unwrap() > 0);
        assert!(field(run, "allocations_per_command").as_f64().is_some());
        // Every topology re-margins the same rows on the same ticks.
        let remargin = |r| field(field(r, "remargin"), "positions").as_u64().unwrap();
        assert_eq!(remargin(run), remargin(&runs[0]), "{run}");
        assert!(remargin(run) > 0);
        assert!(field(field(run, "remargin"), "positions_per_s").as_f64().unwrap() > 0.0);
    }
    assert_eq!(field(&json, "event_hashes_equal"), &serde_json::Value::Bool(true));
    assert_eq!(field(&json, "state_hashes_equal"), &serde_json::Value::Bool(true));
    let liquidations = field(field(&runs[0], "events_by_kind"), "Liquidated").as_u64();
    assert!(liquidations.unwrap_or(0) > 0, "the workload must liquidate: {}", runs[0]);
}

/// Enough scattered positions per account shard (≥ 4096 rows in a market) that the
/// remargin passes put their rows back in account order, on the core and on a helper;
/// the rolled audit, a full cycle every 4096 commands, checks the packed rows against
/// the positions, and every topology must still agree with the serial engine.
#[test]
fn a_remargin_heavy_run_reorders_its_rows_and_every_topology_agrees() {
    let args = [
        "--commands",
        "20000",
        "--accounts",
        "12000",
        "--markets",
        "2",
        "--mark-every",
        "50",
        "--mark-step",
        "40",
        "--positions",
        "20000",
        "--audit-cycle",
        "4096",
        "--threads",
        "1,2",
    ];
    let out = bench(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let runs = field(&json, "runs").as_array().expect("one entry per topology");
    for run in runs {
        assert_eq!(field(run, "halted"), &serde_json::Value::Bool(false), "{run}");
    }
    assert_eq!(field(&json, "event_hashes_equal"), &serde_json::Value::Bool(true));
    assert_eq!(field(&json, "state_hashes_equal"), &serde_json::Value::Bool(true));
}

/// `--rounds` interleaves the topologies; the report's ratios are the ratio of median
/// throughputs and the median of each round's own ratio, both recomputed here from the runs.
#[test]
fn rounds_report_both_ratios_from_their_runs() {
    let mut args = SMALL.to_vec();
    args.extend(["--threads", "1,2", "--rounds", "3"]);
    let out = bench(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let runs = field(&json, "runs").as_array().expect("runs");
    assert_eq!(runs.len(), 6, "3 rounds of 2 topologies, interleaved");
    let speed = |i: usize| field(&runs[i], "commands_per_s").as_f64().unwrap();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let serial = median(vec![speed(0), speed(2), speed(4)]);
    let piped = median(vec![speed(1), speed(3), speed(5)]);
    let of_medians = field(&json, "throughput_vs_first").as_array().unwrap();
    assert_eq!(of_medians[1].as_f64(), Some(round3(piped / serial)));
    let per_round = median(vec![speed(1) / speed(0), speed(3) / speed(2), speed(5) / speed(4)]);
    let of_rounds = field(&json, "median_round_ratio_vs_first").as_array().unwrap();
    assert_eq!(of_rounds[0].as_f64(), Some(1.0));
    assert_eq!(of_rounds[1].as_f64(), Some(round3(per_round)));
}

#[test]
fn impossible_topologies_are_clear_usage_errors() {
    for (threads, flag, message) in [
        ("0", None, "--threads 0"),
        ("2", Some(["--publish-on", "5"]), "publish_on 5 is not one of 2 threads"),
        ("2", Some(["--market-threads", "0,2"]), "market_threads: thread 2 is not one of 2"),
    ] {
        let mut args = SMALL.to_vec();
        args.extend(["--threads", threads]);
        if let Some(flag) = flag {
            args.extend(flag);
        }
        let out = bench(&args);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{stderr}");
        assert!(out.stdout.is_empty(), "no figures for a refused run");
    }
}
