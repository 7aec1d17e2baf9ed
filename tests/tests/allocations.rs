//! The steady state allocates nothing (STYLE.md habit 4, DESIGN.md §1): after a warm-up
//! that fills the engine's pools to their working size, a long window of the default mix —
//! limit, market, stop and IOC orders, cancels, amends, leverage changes, mark ticks that
//! liquidate, stage R's risk passes, group audits — makes zero heap allocations, in the
//! serial engine and in every stage loop of the pipeline (counted across all threads by a
//! counting global allocator). The seeded positions are enough (over 4096 rows per
//! account shard and market) that the remargin passes re-order their rows inside the window
//! too, on the core and on the helpers (checked once by printing from `order`).

use std::alloc::System;

use amdahl_alloc::{Counting, allocations};
use amdahl_engine::pipeline::{Pipeline, PublishOptions, Topology};
use amdahl_engine::{Engine, HashSink};
use amdahl_types::{Command, Seq, Sequenced};
use amdahl_workload::{Generated, WorkloadConfig, generate};

#[global_allocator]
static GLOBAL: Counting<System> = Counting::new(System);

fn workload() -> Generated {
    generate(&WorkloadConfig {
        seed: 11,
        markets: 4,
        accounts: 20_000,
        commands: 300_000,
        mark_every: 100,
        mark_step_ticks: 10,
        positions: 40_000,
        group_size: 64,
        // Every account audited each 1,024 commands: a rolled slice in every group.
        audit_cycle: 1_024,
    })
}

/// Per command kind: how many ran and how many allocations they made.
fn kind(c: &Command) -> usize {
    match c {
        Command::Place(_) => 0,
        Command::Amend(_) => 1,
        Command::Cancel { .. } => 2,
        Command::CancelAll { .. } => 3,
        Command::SetLeverage { .. } => 4,
        Command::Mark { .. } => 5,
        Command::Liquidate { .. } => 6,
        _ => 7,
    }
}
const KINDS: [&str; 10] = [
    "place",
    "amend",
    "cancel",
    "cancel_all",
    "leverage",
    "mark",
    "liquidate",
    "other",
    "audit",
    "risk pass",
];

#[test]
fn serial_engine_steady_state_allocates_nothing() {
    let g = workload();
    let all: Vec<Sequenced> = g.setup.iter().chain(&g.commands).copied().collect();
    let warm_up = g.setup.len() + g.commands.len() / 2;
    let mut engine = Engine::new(&g.engine);
    let mut sink = HashSink::default();
    let mut fed_back: Vec<Command> = Vec::with_capacity(1 << 16);
    let mut feeding: Vec<Command> = Vec::with_capacity(1 << 16);
    let mut numbered: Vec<Sequenced> = Vec::with_capacity(1 << 16);
    let mut seq = 1u64;
    let mut made = [0u64; KINDS.len()];
    let mut ran = [0u64; KINDS.len()];
    let mut window = 0u64;
    for (i, group) in all.chunks(64).enumerate() {
        let counting = i * 64 >= warm_up;
        std::mem::swap(&mut fed_back, &mut feeding);
        numbered.clear();
        for command in feeding.drain(..).chain(group.iter().map(|c| c.command)) {
            numbered.push(Sequenced { seq: Seq(seq), time: group[0].time, command });
            seq += 1;
        }
        let last = numbered.last().expect("a chunk is never empty").seq;
        let before = allocations();
        engine.begin_group(&numbered);
        if counting {
            made[9] += allocations() - before;
            ran[9] += 1;
        }
        for cmd in &numbered {
            let command = cmd.command;
            let before = allocations();
            engine.apply(cmd, &mut sink);
            if counting {
                made[kind(&command)] += allocations() - before;
                ran[kind(&command)] += 1;
                window += 1;
            }
        }
        let before = allocations();
        assert!(engine.end_group(last, &mut sink));
        engine.take_liquidations(&mut fed_back);
        if counting {
            made[8] += allocations() - before;
            ran[8] += 1;
        }
    }
    let report: Vec<String> =
        (0..KINDS.len()).map(|k| format!("{}: {} in {} runs", KINDS[k], made[k], ran[k])).collect();
    assert!(ran[6] > 0 && ran[5] > 0, "the window must hold marks and liquidations: {report:?}");
    assert!(window > 100_000);
    assert_eq!(made.iter().sum::<u64>(), 0, "allocations in steady state: {report:?}");
}

#[test]
fn pipeline_steady_state_allocates_nothing() {
    let g = workload();
    let all: Vec<Sequenced> = g.setup.iter().chain(&g.commands).copied().collect();
    let warm_up = g.setup.len() + g.commands.len() / 2;
    // The last matches every run of two or more market commands market by market, on
    // both threads (`Topology::match_fan_out`).
    for topology in [
        Topology::threads(2),
        Topology { publish_on: 0, risk_fan_out: 1, ..Topology::threads(3) },
        Topology { match_fan_out: 2, ..Topology::threads(2) },
    ] {
        let options = PublishOptions { collect_events: false, clock: None };
        let mut pipeline = Pipeline::start(&g.engine, &topology, options, 0).expect("starts");
        let (first, second) = all.split_at(warm_up.next_multiple_of(64));
        for group in first.chunks(64) {
            for c in group {
                pipeline.submit(c.time, c.command);
            }
            pipeline.end_group();
        }
        pipeline.wait_closed();
        let before = allocations();
        for group in second.chunks(64) {
            for c in group {
                pipeline.submit(c.time, c.command);
            }
            pipeline.end_group();
        }
        pipeline.wait_closed();
        let made = allocations() - before;
        let done = pipeline.finish();
        assert!(!done.engine.is_halted());
        assert_eq!(made, 0, "{topology:?}: {made} allocations in {} commands", second.len());
    }
}
