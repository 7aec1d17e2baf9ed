//! The pipeline's contract (DESIGN.md §2): the same commands with the same group cuts give
//! the same events, in the same order, and the same state hash, whatever the topology. The
//! serial engine is the oracle.
//!
//! Streams come from the seeded workload generator: several markets, thousands of
//! accounts, limit/market/stop orders, cancels, amends, leverage changes, and mark ticks
//! frequent and large enough to liquidate (liquidations feed back into the next group).
//! Group cuts are random. CI runs a bounded number of cases; `AMDAHL_SOAK_CASES=N` runs N
//! (`cargo nextest run -p amdahl-tests --cargo-profile ci --run-ignored only pipeline`).

use amdahl_engine::pipeline::{Pipeline, PublishOptions, Topology, Wait};
use amdahl_engine::{Engine, HaltEvidence, HashSink};
use amdahl_types::{AccountId, Command, Currency, Event, Seq, Sequenced};
use amdahl_workload::{Generated, WorkloadConfig, apply_grouped, generate};
use proptest::prelude::*;

/// What a run produced: every event, the final state hash, and the halt's evidence.
#[derive(PartialEq, Eq, Debug)]
struct Run {
    events: Vec<Event>,
    state_hash: u128,
    halted: bool,
    halt: Option<HaltEvidence>,
}

/// The serial engine, driven as the sequencer drives it: commands numbered as they enter,
/// a group's liquidations fed back ahead of the next group's commands.
fn serial(g: &Generated, cuts: &[usize]) -> Run {
    serial_corrupted(g, cuts, None)
}

/// `serial`, breaking the books at the end of the first group that reaches the command
/// numbered `corrupt_after`, before its audit, as `Topology::inject_corruption_after`
/// makes a pipeline's core do.
fn serial_corrupted(g: &Generated, cuts: &[usize], mut corrupt_after: Option<u64>) -> Run {
    let all: Vec<&Sequenced> = g.setup.iter().chain(&g.commands).collect();
    let mut engine = Engine::new(&g.engine);
    let mut events = Vec::new();
    let mut fed_back: Vec<Command> = Vec::new();
    let (mut seq, mut at) = (1u64, 0usize);
    let mut numbered = Vec::new();
    for &len in cuts {
        let group = &all[at..at + len];
        at += len;
        numbered.clear();
        for command in fed_back.drain(..) {
            numbered.push(Sequenced { seq: Seq(seq), time: group[0].time, command });
            seq += 1;
        }
        for c in group {
            numbered.push(Sequenced { seq: Seq(seq), ..**c });
            seq += 1;
        }
        let last = numbered.last().expect("a cut holds commands").seq;
        engine.begin_group(&numbered);
        for cmd in &numbered {
            engine.apply(cmd, &mut events);
        }
        if corrupt_after.take_if(|at| last.0 >= *at).is_some() {
            engine.corrupt_for_test(AccountId(0), Currency::XBt, 1);
        }
        engine.end_group(last, &mut events);
        engine.take_liquidations(&mut fed_back);
    }
    let halt = engine.halt_evidence().copied();
    Run { events, state_hash: engine.state_hash(), halted: engine.is_halted(), halt }
}

fn piped(g: &Generated, cuts: &[usize], topology: &Topology) -> Run {
    let options = PublishOptions { collect_events: true, clock: None };
    let mut pipeline = Pipeline::start(&g.engine, topology, options, 0).expect("starts");
    let all: Vec<&Sequenced> = g.setup.iter().chain(&g.commands).collect();
    let mut at = 0;
    for &len in cuts {
        for c in &all[at..at + len] {
            pipeline.submit(c.time, c.command);
        }
        at += len;
        pipeline.end_group();
    }
    let done = pipeline.finish();
    assert_eq!(done.published.commands, all.len() as u64, "every command published");
    assert_eq!(done.published.groups, cuts.len() as u64, "every group published");
    let mut hash = HashSink::default();
    for &e in &done.published.events {
        amdahl_engine::EventSink::emit(&mut hash, e);
    }
    assert_eq!(hash.digest(), done.published.event_hash, "the stream hash covers the stream");
    Run {
        events: done.published.events,
        state_hash: done.engine.state_hash(),
        halted: done.engine.is_halted(),
        halt: done.engine.halt_evidence().copied(),
    }
}

/// Random group lengths (1 … max) covering `n` commands.
fn cuts(n: usize, max: usize, mut seed: u64) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = n;
    while left > 0 {
        // splitmix64: enough to vary the cuts; the stream itself is the generator's.
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let len = (1 + (z % max as u64) as usize).min(left);
        out.push(len);
        left -= len;
    }
    out
}

fn topologies() -> Vec<Topology> {
    vec![
        // One thread: the serial engine behind the ingress ring, publishing inline.
        Topology::threads(1),
        // Two threads, publishing on the helper: the 2-core layout.
        Topology::threads(2),
        // Two threads dealing five account shards (the core re-margins three), stage R
        // fanned out for every group, and every run of two or more market commands
        // matched by a matcher per market, the markets dealt over both threads.
        Topology { account_shards: 5, risk_fan_out: 1, match_fan_out: 2, ..Topology::threads(2) },
        // Three threads but two shards (the second helper idles), publishing inline on the
        // core thread, the core yielding; matchers per market for runs of 8 or more.
        Topology {
            publish_on: 0,
            account_shards: 2,
            core_wait: Wait::Yield,
            match_fan_out: 8,
            ..Topology::threads(3)
        },
        // Four shards, publishing on a middle helper, helpers yielding, tiny rings (so
        // producers meet full rings), pinned to core 0 and to cores that may not exist;
        // matchers per market for runs of 3 or more.
        Topology {
            publish_on: 2,
            helper_wait: Wait::Yield,
            ring_slots: 64,
            pin: vec![0, 1, 63, 1000],
            risk_fan_out: 40,
            match_fan_out: 3,
            // Markets 0 and 1 on the third helper, 2 on the core, the rest by default.
            market_threads: vec![3, 3, 0],
            ..Topology::threads(4)
        },
        // Two threads, no matchers per market: sequence order on the core.
        Topology { match_fan_out: 0, ..Topology::threads(2) },
    ]
}

fn check(seed: u64, markets: u16, accounts: u32, commands: u64, mark_every: u64, max_cut: usize) {
    let config = WorkloadConfig {
        seed,
        markets,
        accounts,
        commands,
        mark_every,
        mark_step_ticks: 40,
        // Standing open interest in every market, so ticks have positions to re-margin.
        positions: (accounts as u64 / 2) & !1,
        group_size: 64,
        audit_cycle: 16,
    };
    let g = generate(&config);
    let n = g.setup.len() + g.commands.len();
    let cuts = cuts(n, max_cut, seed ^ 0xA5A5);
    let oracle = serial(&g, &cuts);
    assert!(!oracle.halted, "the oracle run must not halt (seed {seed})");
    for topology in topologies() {
        let run = piped(&g, &cuts, &topology);
        if run.events != oracle.events {
            let at = run.events.iter().zip(&oracle.events).position(|(a, b)| a != b);
            panic!(
                "seed {seed}, {topology:?}: event streams differ at {at:?} (lengths {} vs {})",
                run.events.len(),
                oracle.events.len()
            );
        }
        assert_eq!(run.state_hash, oracle.state_hash, "seed {seed}, {topology:?}");
        assert_eq!(run.halted, oracle.halted);
    }
}

/// A broken book halts every topology at the same group, with the same evidence and the
/// same events before and after (every later write refused): the rolled audit's slices
/// are counted in commands and run at group ends, so where it looks does not depend on
/// threads. The corruption (a wallet changed with no other side) is found by the sums the
/// cycle's last group recounts, so the halt comes some groups after the break.
#[test]
fn a_broken_book_halts_every_topology_at_the_same_group() {
    let config = WorkloadConfig {
        seed: 5,
        markets: 2,
        accounts: 1_000,
        commands: 3_000,
        mark_every: 25,
        mark_step_ticks: 40,
        positions: 500,
        group_size: 64,
        audit_cycle: 200,
    };
    let g = generate(&config);
    let n = g.setup.len() + g.commands.len();
    let cuts = cuts(n, 90, 77);
    let after = (n / 2) as u64;
    let oracle = serial_corrupted(&g, &cuts, Some(after));
    let halt = oracle.halt.expect("the oracle halts");
    assert!(halt.seq.0 >= after, "found at or after the break, at {:?}", halt.seq);
    assert!(
        matches!(halt.error, amdahl_engine::AuditError::Ledger(_)),
        "found by the ledger recount: {halt:?}"
    );
    let refused = oracle.events.iter().filter(|e| {
        matches!(e, Event::Rejected { reason: amdahl_types::RejectReason::EngineHalted, .. })
    });
    assert!(refused.count() > 0, "writes after the halt are refused");
    for topology in topologies() {
        let topology = Topology { inject_corruption_after: Some(after), ..topology };
        let run = piped(&g, &cuts, &topology);
        assert_eq!(run.halt, oracle.halt, "{topology:?}");
        assert!(run.events == oracle.events, "{topology:?}: event streams differ");
        assert_eq!(run.state_hash, oracle.state_hash, "{topology:?}");
    }
}

/// The oracle's driver agrees with the one `amdahl bench` uses when the cuts are even.
#[test]
fn serial_driver_matches_apply_grouped() {
    let config = WorkloadConfig {
        seed: 5,
        markets: 3,
        accounts: 1000,
        commands: 20_000,
        mark_every: 50,
        mark_step_ticks: 40,
        positions: 0,
        group_size: 64,
        audit_cycle: 16,
    };
    let g = generate(&config);
    let mut engine = Engine::new(&g.engine);
    let mut events = Vec::new();
    assert!(apply_grouped(&mut engine, &g.setup, 64, &mut events));
    assert!(apply_grouped(&mut engine, &g.commands, 64, &mut events));
    let mut even: Vec<usize> = g.setup.chunks(64).map(<[_]>::len).collect();
    even.extend(g.commands.chunks(64).map(<[_]>::len));
    let run = serial(&g, &even);
    assert_eq!(run.events, events);
    assert_eq!(run.state_hash, engine.state_hash());
    // The stream really liquidates (the feedback path), triggers stops and amends.
    let count = |f: fn(&Event) -> bool| events.iter().filter(|e| f(e)).count();
    assert!(count(|e| matches!(e, Event::Liquidated { .. })) > 0, "no liquidations");
    assert!(count(|e| matches!(e, Event::OrderTriggered { .. })) > 0, "no stops fired");
    assert!(count(|e| matches!(e, Event::OrderAmended { .. })) > 0, "no amends");
}

/// A stage thread that dies takes the pipeline down with a clear panic, in the driver,
/// instead of leaving the core waiting forever for its shard.
#[test]
fn a_dead_shard_thread_is_a_panic_not_a_hang() {
    let config = WorkloadConfig {
        seed: 9,
        markets: 2,
        accounts: 1000,
        commands: 2_000,
        mark_every: 10,
        mark_step_ticks: 3,
        positions: 200,
        group_size: 64,
        audit_cycle: 16,
    };
    let g = generate(&config);
    for publish_on in [0, 1] {
        let topology = Topology { inject_shard_panic: true, publish_on, ..Topology::threads(2) };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let options = PublishOptions { collect_events: false, clock: None };
            let mut pipeline = Pipeline::start(&g.engine, &topology, options, 0).expect("starts");
            for group in g.setup.iter().chain(&g.commands).collect::<Vec<_>>().chunks(64) {
                for c in group {
                    pipeline.submit(c.time, c.command);
                }
                pipeline.end_group();
            }
            pipeline.finish();
        }));
        let message = outcome.expect_err("the run must fail");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| message.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(
            text.contains("panicked") || text.contains("injected fault"),
            "publish_on {publish_on}: {text}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pipeline_equals_serial_engine(
        seed in any::<u64>(),
        markets in 2u16..=4,
        accounts in 1000u32..4000,
        mark_every in 10u64..120,
        max_cut in 1usize..200,
    ) {
        check(seed, markets, accounts, 15_000, mark_every, max_cut);
    }
}

/// As long as asked: `AMDAHL_SOAK_CASES=N` (default 200).
#[test]
#[ignore = "soak: run with --run-ignored only"]
fn soak_pipeline_equals_serial_engine() {
    let cases: u64 =
        std::env::var("AMDAHL_SOAK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    for case in 0..cases {
        let seed = 0x5EED_0000 + case;
        let markets = 2 + (case % 3) as u16;
        let accounts = 1000 + (case * 997 % 5000) as u32;
        check(seed, markets, accounts, 30_000, 10 + case % 90, 1 + (case * 31 % 256) as usize);
    }
}
