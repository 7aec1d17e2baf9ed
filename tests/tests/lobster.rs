//! The LOBSTER real-order-flow oracle: every published orderbook row must match the book.
//!
//! The data lives in `shared/data/lobster` beside the repository (never copied in); a
//! missing file fails the test. See `shared/data/lobster/README.md` and
//! `amdahl_tests::lobster` for the harness.
use std::path::PathBuf;
use std::time::Instant;

use amdahl_book::Book;
use amdahl_tests::lobster::{self, Report};

fn run(label: &str, files: (PathBuf, PathBuf), levels: usize, rows: usize) -> Report {
    let t0 = Instant::now();
    let (messages, snaps) =
        lobster::read_pair(&files).unwrap_or_else(|e| panic!("{label}: reading LOBSTER data: {e}"));
    let parsed = t0.elapsed();
    assert_eq!(snaps.levels, levels, "{label}: orderbook depth");
    assert_eq!(messages.len(), rows, "{label}: message count");

    let mut book = Book::new(lobster::book_config(&messages, &snaps));
    let t1 = Instant::now();
    let report = lobster::replay(&mut book, &messages, &snaps, levels);
    let replayed = t1.elapsed();
    println!(
        "{label}: {report}\n{label}: parse {:.3} s, replay {:.3} s ({:.0} messages/s)",
        parsed.as_secs_f64(),
        replayed.as_secs_f64(),
        report.messages as f64 / replayed.as_secs_f64()
    );

    if let Some(p) = &report.first_problem {
        panic!("{label}: {} harness assertion(s) failed; first: {p}\n{report}", report.problems);
    }
    if let Some(m) = &report.first_mismatch {
        panic!(
            "{label}: {} of {} rows differ; first: {m}\n{report}",
            report.rows_compared - report.rows_matched,
            report.rows_compared
        );
    }
    assert_eq!(report.rows_compared, rows - 1, "{label}: every row after the seed is compared");
    assert_eq!(report.rows_matched, report.rows_compared, "{label}: every row matches");
    assert!(report.is_clean());
    report
}

#[test]
fn aapl_level10_first999_rows_all_match() {
    let r = run("AAPL level 10 (first 999)", lobster::aapl_first999(), 10, 999);
    assert_eq!(r.rows_matched, 998);
}

#[test]
fn goog_level10_full_day_all_rows_match() {
    let r = run("GOOG level 10", lobster::goog_level10(), 10, 147_916);
    assert_eq!(r.rows_matched, 147_915);
}

#[test]
fn amzn_level5_full_day_all_rows_match() {
    let r = run("AMZN level 5", lobster::amzn_level5(), 5, 155_935);
    assert_eq!(r.rows_matched, 155_934);
}

#[test]
fn parser_reads_prices_in_ticks_and_sides() {
    let m = lobster::parse_messages(
        b"34200.004241176,1,16113575,18,5853300,1\n34200.025551909,4,16120456,18,5859100,-1\n",
    )
    .unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].time_ns, 34_200_004_241_176);
    assert_eq!((m[0].kind, m[0].id, m[0].size, m[0].price), (1, 16_113_575, 18, 58_533));
    assert_eq!(m[0].side, amdahl_types::Side::Buy);
    assert_eq!(m[1].side, amdahl_types::Side::Sell);
    // A price off the $0.01 grid is rejected, not rounded.
    assert!(lobster::parse_messages(b"34200.0,1,1,18,5853350,1\n").is_err());

    let s =
        lobster::parse_snapshots(b"5859400,200,5853300,18,9999999999,0,-9999999999,0\n").unwrap();
    assert_eq!(s.levels, 2);
    assert_eq!(s.len(), 1);
    assert_eq!(s.row(0)[0].get(amdahl_types::Side::Sell), Some((58_594, 200)));
    assert_eq!(s.row(0)[1].get(amdahl_types::Side::Buy), None);
}
