//! The GOOG level-10 LOBSTER day (147,916 messages) replayed through our book and through
//! the `lobster` crate (v0.7), fed the same operation stream (`amdahl_benches::lobster_ops`:
//! row-0 seed, type 1 → limit add, type 3 → cancel, type 4 → market order of the opposite
//! side; type 2 partial cancels are skipped for BOTH books, since `lobster` cannot reduce
//! an order in place and cancel + re-add would change its priority).
//!
//! The files are parsed and converted once, outside the timing; each of the `LOOPS` days
//! starts from fresh books (built outside the timing too). Prints messages/s (the day's
//! messages over the book time) and book ops/s for both, and the ratio. Correctness is the
//! test's job (`tests/tests/lobster.rs`); for reference this also times our book through
//! that full harness (with the row-by-row comparison).
//!
//! Run: `CARGO_BUILD_JOBS=2 cargo bench -p amdahl-benches --bench lobster_replay`.
use std::hint::black_box;
use std::time::{Duration, Instant};

use amdahl_benches::{Op, Ours, Theirs};
use amdahl_book::Book;
use amdahl_tests::lobster;

const LOOPS: u32 = 5;

fn main() {
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    let loops = if quick { 1 } else { LOOPS };

    let t = Instant::now();
    let (messages, snaps) =
        lobster::read_pair(&lobster::goog_level10()).expect("reading the GOOG day");
    let ops: Vec<Op> = amdahl_benches::lobster_ops(&messages, &snaps);
    let config = lobster::book_config(&messages, &snaps);
    println!(
        "GOOG level 10: {} messages -> {} book ops (parsed and converted in {:.2} s, not timed)",
        messages.len(),
        ops.len(),
        t.elapsed().as_secs_f64()
    );
    // Orders whose cancel never appears (they left the top 10) accumulate over the day.
    let capacity: u32 = 1 << 20;

    let (mut ours_time, mut theirs_time) = (Duration::ZERO, Duration::ZERO);
    let mut work = None;
    for _ in 0..loops {
        let mut ours = Ours::new(capacity, config.max_price.0);
        let t = Instant::now();
        ours.run(black_box(&ops));
        ours_time += t.elapsed();

        let mut theirs = Theirs::new(capacity as usize);
        let t = Instant::now();
        theirs.run(black_box(&ops));
        theirs_time += t.elapsed();

        // Identical streams, identical price-time semantics: identical outcomes.
        let same = (ours.fills, ours.traded) == (theirs.fills, theirs.traded)
            && ours.depth() == theirs.depth();
        work = Some((ours.fills, ours.traded, theirs.fills, theirs.traded, same));
    }
    let (of, ot, tf, tt, same) = work.expect("at least one loop");
    println!(
        "fills ours {of} ({ot} shares), lobster {tf} ({tt} shares); final books {}",
        if same { "identical" } else { "DIFFER" }
    );

    let msgs = messages.len() as f64 * f64::from(loops);
    let nops = ops.len() as f64 * f64::from(loops);
    let (o, l) = (ours_time.as_secs_f64(), theirs_time.as_secs_f64());
    println!("replay x{loops}: ours {o:.3} s, lobster {l:.3} s");
    println!("book messages_per_s ops_per_s");
    println!("ours {:.0} {:.0}", msgs / o, nops / o);
    println!("lobster {:.0} {:.0}", msgs / l, nops / l);
    println!("ratio (ours/lobster) {:.2}", l / o);

    // Our book through the full correctness harness (window re-seeding, re-targeting and
    // the comparison with every published row): an upper bound on harness overhead.
    let mut harness = Duration::ZERO;
    for _ in 0..loops {
        let mut book = Book::new(config);
        let t = Instant::now();
        let report = lobster::replay(&mut book, &messages, &snaps, snaps.levels);
        harness += t.elapsed();
        assert!(report.is_clean(), "{report}");
    }
    println!(
        "ours through the correctness harness: {:.0} messages/s ({:.3} s for x{loops})",
        msgs / harness.as_secs_f64(),
        harness.as_secs_f64()
    );
}
