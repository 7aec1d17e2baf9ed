//! Remargin on a mark tick: N open positions in one inverse market (XBTUSD), re-valued by
//! one `Command::Mark`, against the physical floor of streaming the same bytes.
//!
//! The target: a tick over N positions (N from 1,000 to 1,000,000) takes at most
//! twice the time of streaming the position bytes it must read (4 + 8 + 8 + 8 = 28 bytes
//! per position: account, qty, cost, floor) from memory, measured in the same run; and it
//! touches only that market's positions, never all accounts.
//!
//! Setup (not timed): accounts come in pairs; each deposits 0.1 XBT, optionally sets 10x
//! isolated leverage, then one rests a 100-contract sell and the other crosses it, so every
//! account holds one position (half long, half short: the market nets to zero as the
//! tick's recount demands) and the book ends empty. Entry prices spread over ±10 ticks.
//! Four variants: `isolated` (10x: one multiply and one compare per position), `cross`
//! (leverage 0: every position moves its account's cross sum and compares it with the
//! wallet), `cross_scattered` (the same, the pairs trading in a shuffled order, so the
//! positions open in no account order, as in real flow), and `mixed` (isolated, one pair
//! in eight cross).
//!
//! Timed: `Engine::apply` of one `Command::Mark`, alternating 10000.0 and 10000.5 USD so
//! every tick changes the price and nobody is liquidated (checked); the events go to a
//! pre-reserved `Vec<Event>` cleared each tick. `end_group` is not timed (it is run once at
//! the end to check the tick's recount never failed). The floor: a `Vec<u32>` and three
//! `Vec<i64>` of length N summed into one `i64` (wrapping: the sum depends on every byte).
//!
//! After the criterion groups, a plain summary interleaves the two in rounds (tick pass,
//! floor pass, tick pass, ...) per N and reports medians: positions/s, ns per position for
//! the tick and the floor, and the median of the rounds' tick/floor ratios. One more row
//! puts 10,000 positions in an engine of 1,000,000 accounts: its tick should cost what the
//! 10,000-account one does.
//!
//! `REMARGIN_PROFILE=<variant>:<N>` runs only that variant's ticks for ~10 s (for `perf
//! record`), printing the time per position.

use std::hint::black_box;
use std::time::{Duration, Instant};

use amdahl_benches::ticker::{Margin, Ticker};
use criterion::{BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// Positions per timed round of the summary (a round is at least one tick).
const ROUND_POSITIONS: usize = 4_000_000;
const ROUNDS: usize = 21;

/// The bytes a tick reads, N × 28, in the same layout as the engine's packed positions.
struct Floor {
    accounts: Vec<u32>,
    qty: Vec<i64>,
    cost: Vec<i64>,
    floor: Vec<i64>,
}

impl Floor {
    fn new(n: usize) -> Floor {
        Floor {
            accounts: (0..n as u32).collect(),
            qty: (0..n as i64).map(|k| if k % 2 == 0 { -100 } else { 100 }).collect(),
            cost: (0..n as i64).map(|k| 1_000_000 + k % 21).collect(),
            floor: (0..n as i64).map(|k| -1_050_000 - k % 21).collect(),
        }
    }

    /// One pass: every byte feeds the sum.
    #[inline(never)]
    fn stream(&self) -> i64 {
        let mut sum = 0i64;
        let rows = self.accounts.iter().zip(&self.qty).zip(&self.cost).zip(&self.floor);
        for (((&a, &q), &c), &f) in rows {
            sum = sum.wrapping_add(a as i64).wrapping_add(q).wrapping_add(c).wrapping_add(f);
        }
        sum
    }

    fn passes(&self, n: usize) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            black_box(black_box(self).stream());
        }
        start.elapsed()
    }
}

fn criterion_case(c: &mut Criterion, t: &mut Ticker, floor: &Floor, margin: Margin) {
    let n = t.positions;
    let mut g = c.benchmark_group(format!("remargin_{}", margin.name()));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("tick", n), |b| b.iter_custom(|iters| t.ticks(iters as _)));
    g.bench_function(BenchmarkId::new("floor", n), |b| {
        b.iter_custom(|iters| floor.passes(iters as _))
    });
    g.finish();
}

struct Row {
    name: String,
    positions: usize,
    tick_ns: f64,
    floor_ns: f64,
    /// The median of the rounds' own tick/floor ratios (adjacent in time: drift cancels).
    ratio: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Interleaved rounds of ticks and floor passes over the same count of positions; the
/// medians of ns per position. One untimed round first.
fn interleaved(name: String, t: &mut Ticker, floor: &Floor) -> Row {
    let n = t.positions;
    let reps = (ROUND_POSITIONS / n).max(1);
    t.ticks(reps);
    floor.passes(reps);
    let per = |d: Duration| d.as_nanos() as f64 / (reps * n) as f64;
    let (mut tick, mut stream) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        tick.push(per(t.ticks(reps)));
        stream.push(per(floor.passes(reps)));
    }
    t.check();
    let ratio = median(tick.iter().zip(&stream).map(|(t, f)| t / f).collect());
    Row { name, positions: n, tick_ns: median(tick), floor_ns: median(stream), ratio }
}

fn profile(spec: &str) {
    let (margin, n) = spec.split_once(':').expect("REMARGIN_PROFILE=<variant>:<N>");
    let margin = Margin::named(margin).expect("isolated, cross, cross_scattered or mixed");
    let n: usize = n.parse().expect("N");
    let mut t = Ticker::new(n, n, margin);
    let floor = Floor::new(n);
    let (mut ticks, mut streams, mut total) = (Duration::ZERO, Duration::ZERO, 0usize);
    let reps = (ROUND_POSITIONS / n).max(1);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        ticks += t.ticks(reps);
        streams += floor.passes(reps);
        total += reps * n;
    }
    t.check();
    let ns = |d: Duration| d.as_nanos() as f64 / total as f64;
    println!("{spec}: tick {:.3} ns/position, floor {:.3} ns/position", ns(ticks), ns(streams));
}

fn main() {
    if let Ok(spec) = std::env::var("REMARGIN_PROFILE") {
        profile(&spec);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--test" || a == "--list");
    let mut c = Criterion::default().configure_from_args();
    let sizes: &[usize] = if quick { &SIZES[..1] } else { &SIZES };
    let mut rows = Vec::new();
    for margin in Margin::ALL {
        for &n in sizes {
            let mut t = Ticker::new(n, n, margin);
            let floor = Floor::new(n);
            criterion_case(&mut c, &mut t, &floor, margin);
            if !quick {
                rows.push(interleaved(margin.name().to_string(), &mut t, &floor));
            }
        }
    }
    if !quick {
        // A tick walks only its market's positions: 10,000 of them among 1,000,000 accounts.
        let mut t = Ticker::new(10_000, 1_000_000, Margin::Isolated);
        let floor = Floor::new(10_000);
        rows.push(interleaved("isolated_of_1m_accounts".to_string(), &mut t, &floor));
    }
    c.final_summary();
    if quick {
        return;
    }
    println!("\nvariant positions tick_positions_per_s tick_ns_per_pos floor_ns_per_pos ratio");
    for r in rows {
        println!(
            "{} {} {:.0} {:.3} {:.3} {:.2}",
            r.name,
            r.positions,
            1e9 / r.tick_ns,
            r.tick_ns,
            r.floor_ns,
            r.ratio
        );
    }
}
