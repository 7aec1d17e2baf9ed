//! Our order book side by side with the `lobster` crate (v0.7), fed identical operation
//! streams generated once up front by a seeded PRNG (`amdahl_benches`):
//!
//! - `crossing_inserts`: marketable limit orders into a deep book (200 levels × 50 orders
//!   per side); every iteration starts from a freshly built book (not timed).
//! - `resting_adds`: non-crossing limit orders over 200 price levels into an empty book.
//! - `cancels_1m`: cancels, in random order, of 1,000,000 resting orders over 200 levels
//!   (5,000 orders per level). Each iteration cancels the next chunk of the shuffled
//!   sequence; when it is used up the book is rebuilt (not timed), so the measurement
//!   averages over the whole drain.
//!
//! After the criterion groups, `summary()` times each scenario once more with a plain
//! `Instant` loop and prints `scenario ours_ops_per_s lobster_ops_per_s ratio`.
//!
//! Run: `CARGO_BUILD_JOBS=2 cargo bench -p amdahl-benches --bench book`.
use std::hint::black_box;
use std::time::{Duration, Instant};

use amdahl_benches::{
    Cancels, Crossing, MAX_PRICE, Op, Ours, Theirs, cancels, crossing, resting_adds,
};
use criterion::{Criterion, Throughput, criterion_group};

const SEED: u64 = 0x5EED_0A3D_A417;
/// Crossing limit orders per iteration.
const CROSS_BATCH: usize = 10_000;
/// Resting adds per iteration.
const ADDS: usize = 100_000;
/// Resting orders in the cancel scenario.
const CANCEL_BOOK: usize = 1_000_000;
/// Cancels per iteration.
const CANCEL_CHUNK: usize = 10_000;

fn capacity(ops: usize) -> u32 {
    (ops + 1024) as u32
}

fn build_ours(ops: &[Op], capacity: u32) -> Ours {
    let mut b = Ours::new(capacity, MAX_PRICE);
    b.run(ops);
    b
}

fn build_theirs(ops: &[Op], capacity: u32) -> Theirs {
    let mut b = Theirs::new(capacity as usize);
    b.run(ops);
    b
}

/// Either book, behind one interface for the timing loops.
trait Bench: Sized {
    fn build(ops: &[Op], capacity: u32) -> Self;
    fn run(&mut self, ops: &[Op]);
}

impl Bench for Ours {
    fn build(ops: &[Op], capacity: u32) -> Self {
        build_ours(ops, capacity)
    }
    fn run(&mut self, ops: &[Op]) {
        Ours::run(self, ops)
    }
}

impl Bench for Theirs {
    fn build(ops: &[Op], capacity: u32) -> Self {
        build_theirs(ops, capacity)
    }
    fn run(&mut self, ops: &[Op]) {
        Theirs::run(self, ops)
    }
}

/// Times `ops` applied to a fresh book built from `setup`, `iters` times; only the ops
/// are timed (building and dropping the book are not).
fn timed_fresh<B: Bench>(setup: &[Op], ops: &[Op], iters: u64) -> Duration {
    let cap = capacity(setup.len() + ops.len());
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut book = B::build(setup, cap);
        let t = Instant::now();
        book.run(black_box(ops));
        total += t.elapsed();
        black_box(&book);
    }
    total
}

/// Drains the cancel scenario chunk by chunk across calls, rebuilding when used up.
struct Drain<B> {
    book: Option<B>,
    pos: usize,
}

impl<B: Bench> Drain<B> {
    fn new() -> Self {
        Drain { book: None, pos: 0 }
    }
    fn timed(&mut self, s: &Cancels, chunk: usize, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            if self.book.is_none() {
                self.book = Some(B::build(&s.book, capacity(s.book.len())));
                self.pos = 0;
            }
            let book = self.book.as_mut().expect("built above");
            let ops = &s.cancels[self.pos..(self.pos + chunk).min(s.cancels.len())];
            let t = Instant::now();
            book.run(black_box(ops));
            total += t.elapsed();
            self.pos += ops.len();
            if self.pos == s.cancels.len() {
                self.book = None; // dropped outside the timed region
            }
        }
        total
    }
}

fn bench_crossing(c: &mut Criterion) {
    let s: Crossing = crossing(SEED, CROSS_BATCH);
    let mut g = c.benchmark_group("crossing_inserts");
    g.throughput(Throughput::Elements(CROSS_BATCH as u64));
    g.bench_function("ours", |b| {
        b.iter_custom(|iters| timed_fresh::<Ours>(&s.book, &s.takers, iters))
    });
    g.bench_function("lobster", |b| {
        b.iter_custom(|iters| timed_fresh::<Theirs>(&s.book, &s.takers, iters))
    });
    g.finish();
}

fn bench_adds(c: &mut Criterion) {
    let ops = resting_adds(SEED, ADDS);
    let mut g = c.benchmark_group("resting_adds");
    g.throughput(Throughput::Elements(ADDS as u64));
    g.bench_function("ours", |b| b.iter_custom(|iters| timed_fresh::<Ours>(&[], &ops, iters)));
    g.bench_function("lobster", |b| b.iter_custom(|iters| timed_fresh::<Theirs>(&[], &ops, iters)));
    g.finish();
}

fn bench_cancels(c: &mut Criterion) {
    let s = cancels(SEED, CANCEL_BOOK);
    let mut g = c.benchmark_group("cancels_1m");
    g.throughput(Throughput::Elements(CANCEL_CHUNK as u64));
    let mut ours = Drain::<Ours>::new();
    g.bench_function("ours", |b| b.iter_custom(|iters| ours.timed(&s, CANCEL_CHUNK, iters)));
    drop(ours);
    let mut theirs = Drain::<Theirs>::new();
    g.bench_function("lobster", |b| b.iter_custom(|iters| theirs.timed(&s, CANCEL_CHUNK, iters)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_crossing, bench_adds, bench_cancels
}

fn ops_per_s(ops: usize, d: Duration) -> f64 {
    ops as f64 / d.as_secs_f64()
}

/// One line per scenario, from plain timed loops in this run: ours, lobster, ratio.
/// Each measurement follows an untimed warm-up run (caches, branch predictors, and the
/// allocator's reuse of already-faulted pages, as in a long-running engine).
fn summary() {
    let mut rows = Vec::new();

    let s = crossing(SEED, CROSS_BATCH);
    let reps = 50;
    let time = |f: &dyn Fn(u64) -> Duration| {
        f(2);
        f(reps)
    };
    let o = time(&|n| timed_fresh::<Ours>(&s.book, &s.takers, n));
    let t = time(&|n| timed_fresh::<Theirs>(&s.book, &s.takers, n));
    let n = CROSS_BATCH * reps as usize;
    rows.push(("crossing_inserts", ops_per_s(n, o), ops_per_s(n, t)));

    let ops = resting_adds(SEED, ADDS);
    let o = time(&|n| timed_fresh::<Ours>(&[], &ops, n));
    let t = time(&|n| timed_fresh::<Theirs>(&[], &ops, n));
    let n = ADDS * reps as usize;
    rows.push(("resting_adds", ops_per_s(n, o), ops_per_s(n, t)));

    // The whole drain of 1,000,000 cancels, once each, after a warm-up on one chunk.
    let s = cancels(SEED, CANCEL_BOOK);
    fn drain<B: Bench>(s: &Cancels) -> Duration {
        let mut d = Drain::<B>::new();
        d.timed(s, CANCEL_CHUNK, 1);
        d.book = None;
        d.timed(s, CANCEL_BOOK, 1)
    }
    let o = drain::<Ours>(&s);
    let t = drain::<Theirs>(&s);
    rows.push(("cancels_1m", ops_per_s(CANCEL_BOOK, o), ops_per_s(CANCEL_BOOK, t)));

    println!("\nscenario ours_ops_per_s lobster_ops_per_s ratio");
    for (name, ours, theirs) in rows {
        println!("{name} {ours:.0} {theirs:.0} {:.2}", ours / theirs);
    }
}

/// Both books must do the same work on the same stream: check it once before timing.
fn check_same_work() {
    let s = crossing(SEED, CROSS_BATCH);
    let cap = capacity(s.book.len() + s.takers.len());
    let (mut o, mut t) = (build_ours(&s.book, cap), build_theirs(&s.book, cap));
    o.run(&s.takers);
    t.run(&s.takers);
    assert_eq!((o.fills, o.traded), (t.fills, t.traded), "crossing: both books must fill the same");
    assert_eq!(o.depth(), t.depth(), "crossing: both books must end equal");
}

/// A diagnostic for profilers (`perf record`, `valgrind --tool=callgrind`): with
/// `BOOK_PROFILE=<scenario>[:lobster]` in the environment, run only that scenario on one
/// book, `BOOK_PROFILE_REPS` times (default 20; the cancel scenario drains once per rep),
/// print the time and exit. Scenarios: `crossing`, `adds`, `cancels`.
fn profile(spec: &str) {
    let (scenario, theirs) = match spec.strip_suffix(":lobster") {
        Some(scenario) => (scenario, true),
        None => (spec, false),
    };
    let reps = std::env::var("BOOK_PROFILE_REPS").ok().and_then(|r| r.parse().ok());
    let reps: u64 = reps.unwrap_or(20);
    fn run<B: Bench>(scenario: &str, reps: u64) -> (usize, Duration) {
        match scenario {
            "crossing" => {
                let s = crossing(SEED, CROSS_BATCH);
                (CROSS_BATCH * reps as usize, timed_fresh::<B>(&s.book, &s.takers, reps))
            }
            "adds" => {
                let ops = resting_adds(SEED, ADDS);
                (ADDS * reps as usize, timed_fresh::<B>(&[], &ops, reps))
            }
            "cancels" => {
                let s = cancels(SEED, CANCEL_BOOK);
                let mut d = Drain::<B>::new();
                (CANCEL_BOOK * reps as usize, d.timed(&s, CANCEL_BOOK, reps))
            }
            _ => panic!("BOOK_PROFILE: unknown scenario {scenario:?}"),
        }
    }
    if let Some(part) = scenario.strip_prefix("cancels-") {
        cancel_parts(part, reps);
        return;
    }
    let (ops, d) = if theirs { run::<Theirs>(scenario, reps) } else { run::<Ours>(scenario, reps) };
    println!("{spec}: {ops} ops in {d:?}: {:.0} ops/s", ops_per_s(ops, d));
}

/// The cancel scenario split in two: `book` cancels by handles kept in a `Vec` indexed by
/// id (no hash map: the book's own cost), `map` only removes the ids from the
/// `FxHashMap<u64, OrderHandle>` of a built `Ours` (the id map's cost).
fn cancel_parts(part: &str, reps: u64) {
    let s = cancels(SEED, CANCEL_BOOK);
    let mut total = Duration::ZERO;
    for _ in 0..reps {
        let mut ours = build_ours(&s.book, capacity(s.book.len()));
        let ids: Vec<u64> = s
            .cancels
            .iter()
            .map(|op| match *op {
                Op::Cancel { id } => id,
                _ => unreachable!(),
            })
            .collect();
        let t = match part {
            "book" => {
                let mut by_id = vec![None; s.book.len() + 2];
                for (&id, &h) in &ours.handles {
                    by_id[id as usize] = Some(h);
                }
                let t = Instant::now();
                for &id in black_box(&ids) {
                    if let Some(h) = by_id[id as usize].take() {
                        ours.book.cancel(h);
                    }
                }
                t.elapsed()
            }
            "map" => {
                let t = Instant::now();
                for &id in black_box(&ids) {
                    black_box(ours.handles.remove(&id));
                }
                t.elapsed()
            }
            _ => panic!("BOOK_PROFILE: unknown cancel part {part:?}"),
        };
        total += t;
        black_box(&ours);
    }
    let ops = CANCEL_BOOK * reps as usize;
    println!("cancels-{part}: {ops} ops in {total:?}: {:.0} ops/s", ops_per_s(ops, total));
}

fn main() {
    if let Ok(spec) = std::env::var("BOOK_PROFILE") {
        profile(&spec);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--test" || a == "--list");
    if !quick {
        check_same_work();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    if !quick {
        summary();
    }
}
