//! `amdahl bench`: generate a seeded workload, run it through the serial engine and/or
//! pipelines of several topologies (one after the other, in one process, on the same
//! workload), and report throughput, latency percentiles, remargin and audit times,
//! positions re-margined per second of tick time (and per thread), allocations per
//! command, reject counts and the output/state hashes.
//!
//! Serial runs (`--threads 1`) time each command as the engine applies it. Pipeline runs
//! time from ingress (when the driver meant to submit the command: open loop, no
//! coordinated omission) to publish (the command's group audited and its events hashed:
//! when an ack would be released). Both hash every event of setup and mix into one stream
//! hash, so the same seed gives the same `event_hash` in every topology.
//!
//! Timing: the workload is generated (and the setup deposits applied) before the clock
//! starts. The timed loop reads `Instant::now()` once per command and once more per group
//! (a chained clock: each reading ends one interval and starts the next), so the command,
//! audit and group intervals tile the run without gaps. The clock read itself is measured
//! beforehand and reported as `timer_overhead_ns` (it is inside every command interval).

use std::sync::OnceLock;
use std::time::Instant;

use amdahl_engine::pipeline::{Pipeline, PublishOptions, Topology, Wait};
use amdahl_engine::{Engine, EventSink, HashSink};
use amdahl_types::{Command, Event, RejectReason, Seq, Sequenced};
use amdahl_workload::{Generated, WorkloadConfig, apply_grouped, generate};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Workload seed: the same seed and flags give the same commands, events and hashes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Markets (even: XBTUSD-like inverse, odd: XBTUSDT-like linear).
    #[arg(long, default_value_t = 4)]
    pub markets: u16,
    #[arg(long, default_value_t = 100_000)]
    pub accounts: u32,
    /// Commands in the timed mix (after the setup deposits).
    #[arg(long, default_value_t = 1_000_000)]
    pub commands: u64,
    /// A mark tick every this many commands (0: never).
    #[arg(long, default_value_t = 1000)]
    pub mark_every: u64,
    /// The largest move of one mark tick, in ticks (a random walk within ±2% of the open).
    #[arg(long, default_value_t = 3)]
    pub mark_step: u64,
    /// Open positions the setup creates before timing starts (account pairs, in a seeded
    /// shuffle, trading at the opening mark; even, at most markets × the accounts that pair
    /// up): the remargin-heavy workload.
    #[arg(long, default_value_t = 0)]
    pub positions: u64,
    /// Commands per group (the engine audits after each group).
    #[arg(long, default_value_t = 64)]
    pub group_size: u32,
    /// The engine's whole-system recomputation, rolled over this many commands (each group
    /// checks its share of the accounts and order slots; 0: never; every mark tick
    /// recounts its own market and every group runs the ledger audit).
    #[arg(long, default_value_t = 262_144)]
    pub audit_cycle: u64,
    /// Engine threads per run: 1 is the serial engine; N ≥ 2 a pipeline (core thread plus
    /// N−1 helpers, N account shards). A list (`--threads 1,2`) runs each in turn on the
    /// same workload and prints them side by side.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// The pipeline thread that publishes (0: the core thread; default: the last helper).
    #[arg(long)]
    pub publish_on: Option<usize>,
    /// How pipeline threads wait: block (park until woken; any machine), yield, or spin
    /// (only with a core per thread).
    #[arg(long, value_enum, default_value_t = WaitArg::Block)]
    pub wait: WaitArg,
    /// Account shards of the remargin stage and of stage R, dealt round-robin over the
    /// threads (default: one per thread).
    #[arg(long)]
    pub account_shards: Option<usize>,
    /// Segments (`risk.rs`) of at least this many commands fan stage R out over the
    /// threads (smaller ones run it on the core thread).
    #[arg(long, default_value_t = Topology::threads(1).risk_fan_out)]
    pub risk_fan_out: usize,
    /// Runs of a segment's market commands of at least this many commands are matched
    /// by a matcher per market, on the pipeline's threads (0: always in sequence order on
    /// the core).
    #[arg(long, default_value_t = Topology::threads(1).match_fan_out)]
    pub match_fan_out: usize,
    /// Per market, the pipeline thread that matches it (a list; default: market m on
    /// thread m mod N).
    #[arg(long, value_delimiter = ',')]
    pub market_threads: Vec<usize>,
    /// Pin pipeline thread i to CPU core pin[i] (a list; missing cores are skipped).
    #[arg(long, value_delimiter = ',')]
    pub pin: Vec<usize>,
    /// Run the `--threads` list this many times, interleaved, and compare the topologies
    /// by their median throughput (a shared, noisy machine drifts between runs).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Offered load for pipeline runs, commands per second (0: as fast as taken).
    #[arg(long, default_value_t = 0)]
    pub offered_rate: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum WaitArg {
    Block,
    Yield,
    Spin,
}

impl BenchArgs {
    pub fn topology(&self, threads: usize) -> Topology {
        let wait = match self.wait {
            WaitArg::Block => Wait::Block,
            WaitArg::Yield => Wait::Yield,
            WaitArg::Spin => Wait::Spin,
        };
        Topology {
            publish_on: self.publish_on.unwrap_or(threads - 1),
            account_shards: self.account_shards.unwrap_or(threads),
            risk_fan_out: self.risk_fan_out,
            match_fan_out: self.match_fan_out,
            market_threads: self.market_threads.clone(),
            pin: self.pin.clone(),
            core_wait: wait,
            helper_wait: wait,
            ..Topology::threads(threads)
        }
    }
}

impl BenchArgs {
    pub fn workload(&self) -> WorkloadConfig {
        WorkloadConfig {
            seed: self.seed,
            markets: self.markets,
            accounts: self.accounts,
            commands: self.commands,
            mark_every: self.mark_every,
            mark_step_ticks: self.mark_step,
            positions: self.positions,
            group_size: self.group_size,
            audit_cycle: self.audit_cycle,
        }
    }
}

pub struct Report {
    pub json: Value,
    pub halted: bool,
}

/// Event kinds counted by name; every other kind (deposits, withdrawals, index ticks, and
/// any added later) counts as "Other", so a new `Event` variant needs no change here.
const KINDS: [&str; 15] = [
    "Rejected",
    "OrderAccepted",
    "OrderTriggered",
    "Fill",
    "OrderCanceled",
    "OrderAmended",
    "Realised",
    "LeverageChanged",
    "MarkChanged",
    "Halted",
    "Liquidated",
    "Deleveraged",
    "InsuranceCovered",
    "FundTopUp",
    "Other",
];

/// Hashes every event (as `HashSink`) and counts events by kind and rejects by reason in
/// fixed arrays: a few nanoseconds per event, no allocation.
struct CountingSink {
    hash: HashSink,
    kinds: [u64; KINDS.len()],
    rejects: [u64; 256],
    reasons: [Option<RejectReason>; 256],
}

impl CountingSink {
    fn new() -> CountingSink {
        CountingSink {
            hash: HashSink::default(),
            kinds: [0; KINDS.len()],
            rejects: [0; 256],
            reasons: [None; 256],
        }
    }
}

impl EventSink for CountingSink {
    #[inline]
    fn emit(&mut self, event: Event) {
        let kind = match event {
            Event::Rejected { reason, .. } => {
                let r = reason as u8 as usize;
                self.rejects[r] += 1;
                self.reasons[r] = Some(reason);
                0
            }
            Event::OrderAccepted { .. } => 1,
            Event::OrderTriggered { .. } => 2,
            Event::Fill { .. } => 3,
            Event::OrderCanceled { .. } => 4,
            Event::OrderAmended { .. } => 5,
            Event::Realised { .. } => 6,
            Event::LeverageChanged { .. } => 7,
            Event::MarkChanged { .. } => 8,
            Event::Halted { .. } => 9,
            Event::Liquidated { .. } => 10,
            Event::Deleveraged { .. } => 11,
            Event::InsuranceCovered { .. } => 12,
            Event::FundTopUp { .. } => 13,
            _ => 14,
        };
        self.kinds[kind] += 1;
        self.hash.emit(event);
    }
}

fn histogram() -> Histogram<u64> {
    // 1 ns … 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
}

/// Positions re-margined per second of mark-tick time, and per engine thread (a tick
/// spreads over every thread of a pipeline).
fn remargin_rate(positions: u64, tick_ns: u64, threads: usize) -> Value {
    let per_s = if tick_ns > 0 { positions as f64 * 1e9 / tick_ns as f64 } else { 0.0 };
    json!({
        "positions": positions,
        "tick_seconds": tick_ns as f64 / 1e9,
        "positions_per_s": per_s.round(),
        "positions_per_s_per_thread": (per_s / threads.max(1) as f64).round(),
    })
}

fn percentiles(h: &Histogram<u64>) -> Value {
    json!({
        "p50": h.value_at_quantile(0.50),
        "p99": h.value_at_quantile(0.99),
        "p99.9": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "count": h.len(),
    })
}

/// The cost of one `Instant::now()` (the median of 101 batches of 1000 reads).
fn timer_overhead_ns() -> f64 {
    let mut batches: Vec<f64> = (0..101)
        .map(|_| {
            let start = Instant::now();
            let mut last = start;
            for _ in 0..1000 {
                last = std::hint::black_box(Instant::now());
            }
            (last - start).as_nanos() as f64 / 1000.0
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[50]
}

/// This thread's time on a CPU and waiting for one, in seconds, from Linux's
/// `/proc/thread-self/schedstat` (None elsewhere). On a shared machine the wait shows how
/// much of the wall-clock time other processes took.
fn schedstat() -> Option<(f64, f64)> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = s.split_whitespace().map(|f| f.parse::<u64>().ok());
    let run = fields.next()??;
    let wait = fields.next()??;
    Some((run as f64 / 1e9, wait as f64 / 1e9))
}

fn ns(d: std::time::Duration) -> u64 {
    (d.as_nanos() as u64).max(1)
}

/// What the timed loop measured.
struct Timed {
    command_ns: Histogram<u64>,
    mark_ns: Histogram<u64>,
    /// Open positions the mark ticks re-margined, and the ticks' time, exactly.
    mark_positions: u64,
    mark_total_ns: u64,
    group_ns: Histogram<u64>,
    audit_ns: Histogram<u64>,
    audit_total_ns: u64,
    risk_ns: Histogram<u64>,
    sink: CountingSink,
    groups: u64,
    seconds: f64,
    allocations: u64,
}

impl Timed {
    fn new(sink: CountingSink) -> Timed {
        Timed {
            command_ns: histogram(),
            mark_ns: histogram(),
            mark_positions: 0,
            mark_total_ns: 0,
            group_ns: histogram(),
            audit_ns: histogram(),
            audit_total_ns: 0,
            risk_ns: histogram(),
            sink,
            groups: 0,
            seconds: 0.0,
            allocations: 0,
        }
    }
}

/// The timed loop, a function of its own so a profiler can collect just this part
/// (`valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*timed_run*'`).
#[inline(never)]
fn timed_run(
    engine: &mut Engine,
    commands: &[Sequenced],
    group_size: usize,
    mut m: Timed,
) -> Timed {
    // As the sequencer does: number every command as it enters, and feed the liquidations a
    // group found back as the first commands of the next group.
    let mut seq = commands.first().map_or(1, |c| c.seq.0);
    let mut liquidations: Vec<Command> = Vec::with_capacity(1 << 16);
    // Counted from here: the loop's own buffers (histograms, the feedback vector) are made.
    let allocations = amdahl_alloc::allocations();
    let start = Instant::now();
    let mut t = start;
    let mut numbered: Vec<Sequenced> = Vec::with_capacity(group_size + (1 << 16));
    for group in commands.chunks(group_size) {
        let group_start = t;
        let fed_back = liquidations.drain(..).map(|command| Sequenced {
            seq: Seq(0),
            time: group[0].time,
            command,
        });
        numbered.clear();
        for cmd in fed_back.chain(group.iter().copied()) {
            numbered.push(Sequenced { seq: Seq(seq), ..cmd });
            seq += 1;
        }
        let last = numbered.last().expect("a chunk is never empty").seq;
        // Stage R for the group's first segment, before any of it is matched (R decides a
        // later segment inside `apply`, timed with the command that opens it).
        engine.begin_group(&numbered);
        let now = Instant::now();
        m.risk_ns.saturating_record(ns(now - t));
        t = now;
        for cmd in &numbered {
            // The rows a mark tick re-margins, counted before it (a few ns in a tick's time).
            let rows = match cmd.command {
                Command::Mark { market, .. } => engine.open_positions(market) as u64,
                _ => 0,
            };
            engine.apply(cmd, &mut m.sink);
            let now = Instant::now();
            m.command_ns.saturating_record(ns(now - t));
            if let Command::Mark { .. } = cmd.command {
                m.mark_ns.saturating_record(ns(now - t));
                m.mark_positions += rows;
                m.mark_total_ns += ns(now - t);
            }
            t = now;
        }
        let ok = engine.end_group(last, &mut m.sink);
        engine.take_liquidations(&mut liquidations);
        let now = Instant::now();
        let audit = ns(now - t);
        m.audit_total_ns += audit;
        m.audit_ns.saturating_record(audit);
        m.group_ns.saturating_record(ns(now - group_start));
        t = now;
        m.groups += 1;
        if !ok {
            break;
        }
    }
    m.seconds = (t - start).as_secs_f64();
    m.allocations = amdahl_alloc::allocations() - allocations;
    m
}

/// Nanoseconds since the first call: the clock the pipeline is given (the engine crates
/// never read one themselves).
fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// One run's figures, and whether its engine halted.
struct RunReport {
    json: Value,
    halted: bool,
    event_hash: String,
    state_hash: String,
    commands_per_s: f64,
}

fn serial_run(config: &WorkloadConfig, workload: &Generated) -> RunReport {
    let setup_start = Instant::now();
    let mut engine = Engine::new(&workload.engine);
    // One stream hash over setup and mix, as the pipeline publishes them.
    let mut sink = CountingSink::new();
    let setup_ok =
        apply_grouped(&mut engine, &workload.setup, config.group_size as usize, &mut sink);
    sink.kinds = [0; KINDS.len()];
    sink.rejects = [0; 256];
    let setup_seconds = setup_start.elapsed().as_secs_f64();

    let overhead = timer_overhead_ns();
    let sched_start = schedstat();
    let timed = if setup_ok {
        // The histograms are made outside the timed (and profiled) loop.
        let timed = Timed::new(sink);
        timed_run(&mut engine, &workload.commands, config.group_size as usize, timed)
    } else {
        Timed::new(sink)
    };
    let sched = sched_start.zip(schedstat()).map(|((r0, w0), (r1, w1))| (r1 - r0, w1 - w0));
    let Timed {
        command_ns,
        mark_ns,
        mark_positions,
        mark_total_ns,
        group_ns,
        audit_ns,
        audit_total_ns,
        risk_ns,
        sink,
        groups,
        seconds,
        allocations,
    } = timed;

    let halted = engine.is_halted();
    // The mix's commands (the fed-back liquidations are in the latency histogram, not
    // here), as a pipeline run counts them.
    let commands = workload.commands.len() as u64;
    let events: u64 = sink.kinds.iter().sum();
    let hash_start = Instant::now();
    let state_hash = format!("{:032x}", engine.state_hash());
    let state_hash_seconds = hash_start.elapsed().as_secs_f64();
    let per_s = |n: u64| if seconds > 0.0 { (n as f64 / seconds).round() } else { 0.0 };
    let event_hash = format!("{:032x}", sink.hash.digest());
    let json = json!({
        "engine": "serial",
        "threads": 1,
        "commands": commands,
        "events": events,
        "groups": groups,
        "seconds": seconds,
        "cpu_seconds": sched.map(|s| s.0),
        "runqueue_wait_seconds": sched.map(|s| s.1),
        "commands_per_s": per_s(commands),
        "events_per_s": per_s(events),
        "latency": "per command, as the engine applies it",
        "command_latency_ns": percentiles(&command_ns),
        "mark_tick_ns": percentiles(&mark_ns),
        "remargin": remargin_rate(mark_positions, mark_total_ns, 1),
        "group_latency_ns": percentiles(&group_ns),
        "audit_ns_per_group": percentiles(&audit_ns),
        "audit_seconds": audit_total_ns as f64 / 1e9,
        "risk_ns_per_group": percentiles(&risk_ns),
        "timer_overhead_ns": overhead,
        "allocations": allocations,
        "allocations_per_command": allocations as f64 / commands.max(1) as f64,
        "events_by_kind": kinds_json(&sink),
        "rejects": rejects_json(&sink),
        "open_orders_at_end": engine.open_orders(),
        "event_hash": event_hash,
        "state_hash": state_hash,
        "halted": halted,
        "halt": engine.halt_evidence().map(|h| format!("{h:?}")),
        "setup_seconds": setup_seconds,
        "state_hash_seconds": state_hash_seconds,
    });
    RunReport { json, halted, event_hash, state_hash, commands_per_s: per_s(commands) }
}

fn kinds_json(sink: &CountingSink) -> Map<String, Value> {
    let mut events_by_kind = Map::new();
    for (name, count) in KINDS.iter().zip(&sink.kinds) {
        if *count != 0 {
            events_by_kind.insert(name.to_string(), json!(count));
        }
    }
    events_by_kind
}

fn rejects_json(sink: &CountingSink) -> Map<String, Value> {
    let mut rejects = Map::new();
    for (count, reason) in sink.rejects.iter().zip(&sink.reasons) {
        if let Some(reason) = reason {
            rejects.insert(format!("{reason:?}"), json!(count));
        }
    }
    rejects
}

fn histogram_of(samples: &[u64]) -> Histogram<u64> {
    let mut h = histogram();
    for &v in samples {
        h.saturating_record(v.max(1));
    }
    h
}

/// Wait until the clock reaches `t` (ns): sleep through long gaps, yield through short
/// ones, so the driver leaves the engine threads their cores.
fn pace_until(t: u64) {
    loop {
        let now = now_ns();
        if now >= t {
            return;
        }
        if t - now > 200_000 {
            std::thread::sleep(std::time::Duration::from_nanos(t - now - 100_000));
        } else {
            std::thread::yield_now();
        }
    }
}

fn pipeline_run(
    config: &WorkloadConfig,
    workload: &Generated,
    topology: &Topology,
    offered_rate: u64,
) -> RunReport {
    let group_size = config.group_size as usize;
    let samples = workload.setup.len() + workload.commands.len();
    let options = PublishOptions { collect_events: false, clock: Some(now_ns) };
    let setup_start = Instant::now();
    let mut pipeline = match Pipeline::start(&workload.engine, topology, options, samples) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("amdahl bench: {e}");
            std::process::exit(2);
        }
    };
    for group in workload.setup.chunks(group_size) {
        for c in group {
            pipeline.submit(c.time, c.command);
        }
        pipeline.end_group();
    }
    let setup_events = pipeline.wait_published();
    let setup_seconds = setup_start.elapsed().as_secs_f64();

    let allocations_before = amdahl_alloc::allocations();
    let start = now_ns();
    let interval = if offered_rate > 0 { 1e9 / offered_rate as f64 } else { 0.0 };
    if offered_rate == 0 {
        // As fast as taken: groups of `group_size`, as the serial run cuts them.
        for group in workload.commands.chunks(group_size) {
            for c in group {
                pipeline.submit(c.time, c.command);
            }
            pipeline.end_group();
        }
    } else {
        // Open loop at the offered rate. The sequencer cuts a group when its queue runs
        // dry (no command due yet) or at `group_size`, so a command never waits for later
        // arrivals to fill its group. The cuts then depend on timing, so the hashes of an
        // offered-rate run are that run's own (its journal would record the cuts).
        let mut in_group = 0usize;
        for (i, c) in workload.commands.iter().enumerate() {
            let t = start + (i as f64 * interval) as u64;
            if in_group > 0 && now_ns() < t {
                pipeline.end_group();
                in_group = 0;
            }
            pace_until(t);
            pipeline.submit_scheduled(c.time, c.command, t);
            in_group += 1;
            if in_group == group_size {
                pipeline.end_group();
                in_group = 0;
            }
        }
        if in_group > 0 {
            pipeline.end_group();
        }
    }
    let offered_seconds = (now_ns() - start) as f64 / 1e9;
    pipeline.wait_closed();
    let closed_seconds = (now_ns() - start) as f64 / 1e9;
    let events_total = pipeline.wait_published();
    let seconds = (now_ns() - start) as f64 / 1e9;
    let allocations = amdahl_alloc::allocations() - allocations_before;
    let done = pipeline.finish();

    let commands = workload.commands.len() as u64;
    let events = events_total - setup_events;
    let latency = histogram_of(
        &done.published.latency_ns[workload.setup.len().min(done.published.latency_ns.len())..],
    );
    let mark_ns = histogram_of(&done.times.mark_ns);
    let groups =
        (done.published.groups as usize).saturating_sub(workload.setup.len().div_ceil(group_size));
    let audits = &done.times.audit_ns[done.times.audit_ns.len().saturating_sub(groups)..];
    let audit_ns = histogram_of(audits);
    let halted = done.engine.is_halted();
    let state_hash = format!("{:032x}", done.engine.state_hash());
    let event_hash = format!("{:032x}", done.published.event_hash);
    let per_s = |n: u64| if seconds > 0.0 { (n as f64 / seconds).round() } else { 0.0 };
    let json = json!({
        "engine": "pipeline",
        "threads": topology.threads,
        "topology": {
            "account_shards": topology.account_shards,
            "risk_fan_out": topology.risk_fan_out,
            "match_fan_out": topology.match_fan_out,
            "market_threads": topology.market_threads,
            "publish_on": topology.publish_on,
            "pin": topology.pin,
            "core_wait": format!("{:?}", topology.core_wait),
            "helper_wait": format!("{:?}", topology.helper_wait),
            "ring_slots": topology.ring_slots,
        },
        "offered_rate": offered_rate,
        "group_cut": if offered_rate == 0 {
            "every group_size commands"
        } else {
            "queue empty or group_size"
        },
        "offered_seconds": offered_seconds,
        "commands": commands,
        "events": events,
        "groups": groups,
        "seconds": seconds,
        "core_seconds": closed_seconds,
        "commands_per_s": per_s(commands),
        "events_per_s": per_s(events),
        "latency": "ingress (scheduled) to publish of the command's group",
        "command_latency_ns": percentiles(&latency),
        "mark_tick_ns": percentiles(&mark_ns),
        "remargin": remargin_rate(
            done.times.mark_positions,
            done.times.mark_ns.iter().sum(),
            topology.threads,
        ),
        "audit_ns_per_group": percentiles(&audit_ns),
        "audit_seconds": audits.iter().sum::<u64>() as f64 / 1e9,
        "allocations": allocations,
        "allocations_per_command": allocations as f64 / commands.max(1) as f64,
        "event_hash": event_hash,
        "state_hash": state_hash,
        "halted": halted,
        "halt": done.engine.halt_evidence().map(|h| format!("{h:?}")),
        "setup_seconds": setup_seconds,
    });
    RunReport { json, halted, event_hash, state_hash, commands_per_s: per_s(commands) }
}

pub fn run(args: &BenchArgs) -> Report {
    let config = args.workload();
    let generate_start = Instant::now();
    let workload = generate(&config);
    let generate_seconds = generate_start.elapsed().as_secs_f64();
    let max_orders: Vec<u32> = workload.engine.markets.iter().map(|m| m.max_orders).collect();
    let workload_json = json!({
        "seed": config.seed,
        "markets": config.markets,
        "accounts": config.accounts,
        "commands": config.commands,
        "mark_every": config.mark_every,
        "mark_step_ticks": config.mark_step_ticks,
        "positions": config.positions,
        "group_size": config.group_size,
        "audit_cycle": config.audit_cycle,
        "setup_commands": workload.setup.len(),
        "max_orders_per_market": max_orders,
        "generate_seconds": generate_seconds,
    });
    let mut runs: Vec<RunReport> = Vec::new();
    for _ in 0..args.rounds.max(1) {
        for &threads in &args.threads {
            runs.push(if threads == 1 {
                serial_run(&config, &workload)
            } else {
                pipeline_run(&config, &workload, &args.topology(threads), args.offered_rate)
            });
        }
    }
    let halted = runs.iter().any(|r| r.halted);
    let json = if let [only] = &runs[..] {
        let mut json = only.json.clone();
        json["workload"] = workload_json;
        json
    } else {
        // Per entry of the --threads list: the median throughput over the rounds.
        let k = args.threads.len();
        let median = |i: usize| {
            let mut v: Vec<f64> =
                runs.iter().skip(i).step_by(k).map(|r| r.commands_per_s).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let medians: Vec<f64> = (0..k).map(median).collect();
        let first = medians[0].max(1.0);
        // Per entry: the median over rounds of its throughput against the first entry's in
        // the same round. A round's runs are minutes apart at most, so this ratio cancels
        // the host's drift between rounds, which the ratio of medians does not.
        let round_ratio = |i: usize| {
            let mut v: Vec<f64> = runs
                .chunks(k)
                .map(|round| round[i].commands_per_s / round[0].commands_per_s.max(1.0))
                .collect();
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2] * 1000.0).round() / 1000.0
        };
        json!({
            "workload": workload_json,
            "rounds": args.rounds.max(1),
            "runs": runs.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
            "median_commands_per_s": medians,
            "throughput_vs_first": medians
                .iter()
                .map(|m| (m / first * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>(),
            "median_round_ratio_vs_first": (0..k).map(round_ratio).collect::<Vec<_>>(),
            "event_hashes_equal": runs.iter().all(|r| r.event_hash == runs[0].event_hash),
            "state_hashes_equal": runs.iter().all(|r| r.state_hash == runs[0].state_hash),
        })
    };
    Report { json, halted }
}
