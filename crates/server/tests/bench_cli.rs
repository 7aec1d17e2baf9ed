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
        args.extend(["--seed", seed, "--full-audit-every", "8"]);
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
fn unsupported_topology_is_a_clear_usage_error() {
    let mut args = SMALL.to_vec();
    args.extend(["--threads", "2"]);
    let out = bench(&args);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--threads 2"), "{stderr}");
    assert!(out.stdout.is_empty(), "no figures for a refused run");
}
