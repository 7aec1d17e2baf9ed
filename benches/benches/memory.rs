//! The host's memory, measured: what one random access costs at each working-set size.
//!
//! The engine's figures mean little without these. A command touches a handful of
//! per-account rows (position, order aggregates, margin cache, wallet, order record) in
//! arrays of megabytes, and a mark tick touches one cross sum and one wallet per cross
//! position, in account order that is random; so past the caches, throughput is set by
//! how many of those accesses miss and how many the core can overlap, not by instruction
//! counts. On a shared VM this drifts by 2× within an hour, so a note that quotes engine
//! throughput should quote this run beside it.
//!
//! Two figures per size (a random cyclic permutation of `u32` indices over the set):
//! - `dependent`: a pointer chase, each load's address from the previous load — the full
//!   latency of one access (what a chain of lookups pays: order id → slot → book node);
//! - `independent`: loads whose addresses are known up front — the cost per access when
//!   the core overlaps them (what a pass over rows in random account order pays).
//!
//! Run: `cargo bench -p amdahl-benches --bench memory` (a few seconds).

use std::hint::black_box;
use std::time::Instant;

/// Working-set sizes in bytes: L1, L2, the engine's per-account arrays, and well past L3.
const SIZES: [usize; 7] = [32 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20];
const STEPS: usize = 4_000_000;

/// A single-cycle random permutation of `0..n` (Sattolo's algorithm over a xorshift
/// stream: deterministic, so runs compare), as "next index" links.
fn cycle(n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % i as u64) as usize);
    }
    let mut next = vec![0u32; n];
    for i in 0..n {
        next[order[i] as usize] = order[(i + 1) % n];
    }
    next
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    println!("bytes dependent_ns independent_ns");
    for bytes in SIZES {
        let n = bytes / 4;
        // Sizes are powers of two, so an address is a mask, not a division.
        assert!(n.is_power_of_two());
        let mask = n as u64 - 1;
        let next = cycle(n);
        // Warm: one full lap, so the first pass does not pay for page faults.
        let mut k = 0u32;
        for _ in 0..n {
            k = next[k as usize];
        }
        let start = Instant::now();
        for _ in 0..STEPS {
            k = next[k as usize];
        }
        let dependent = start.elapsed().as_nanos() as f64 / STEPS as f64;
        black_box(k);
        // The same random addresses, but each computed without waiting for a load.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut sum = 0u64;
        let start = Instant::now();
        for _ in 0..STEPS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sum = sum.wrapping_add(next[(x & mask) as usize] as u64);
        }
        let independent = start.elapsed().as_nanos() as f64 / STEPS as f64;
        black_box(sum);
        println!("{bytes} {dependent:.1} {independent:.1}");
    }
}
