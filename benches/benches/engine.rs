//! The serial engine end to end: a seeded `amdahl-workload` stream (Zipf accounts, limit
//! orders near the touch, cancels, amends, crossing orders, stops) applied command by
//! command with a group cut every `group_size` commands, events folded into a `HashSink`.
//!
//! The stream is generated once, outside timing. Each sample builds a fresh engine and
//! applies the setup deposits outside timing (`iter_batched`, `PerIteration`), then times
//! the mix. Throughput is in commands. Two cases: `mix` (with the engine's periodic full
//! audit, as `amdahl bench` runs by default) and `mix_no_full_audit` (matching, settlement
//! and the incremental audit only), so the full audit's share is visible.
//!
//! `AMDAHL_BENCH_COMMANDS` overrides the mix length (default 1,000,000).

use std::hint::black_box;
use std::time::Duration;

use amdahl_engine::{Engine, HashSink};
use amdahl_workload::{Generated, WorkloadConfig, apply_grouped, generate};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn commands() -> u64 {
    std::env::var("AMDAHL_BENCH_COMMANDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000)
}

/// A fresh engine with the setup deposits applied.
fn ready(w: &Generated, group_size: usize) -> Engine {
    let mut engine = Engine::new(&w.engine);
    let mut sink = HashSink::default();
    assert!(apply_grouped(&mut engine, &w.setup, group_size, &mut sink), "setup halted");
    engine
}

fn bench_case(c: &mut Criterion, name: &str, config: WorkloadConfig) {
    let w = generate(&config);
    let group_size = config.group_size as usize;
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(w.commands.len() as u64));
    group.bench_function(name, |b| {
        b.iter_batched(
            || ready(&w, group_size),
            |mut engine| {
                let mut sink = HashSink::default();
                let ok = apply_grouped(&mut engine, &w.commands, group_size, &mut sink);
                assert!(ok, "the engine halted");
                // The engine is dropped outside timing (returned to criterion).
                (black_box(sink.digest()), engine)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn engine(c: &mut Criterion) {
    let commands = commands();
    let base = WorkloadConfig { commands, ..WorkloadConfig::default() };
    // As `amdahl bench` runs it: the engine's periodic full audit every 64 groups.
    bench_case(c, "mix", base.clone());
    // Matching and settlement alone: no periodic full audit (and no mark ticks, which
    // would each force one), only the incremental audit after every group.
    bench_case(c, "mix_no_full_audit", WorkloadConfig { audit_cycle: 0, ..base });
}

criterion_group!(benches, engine);
criterion_main!(benches);
