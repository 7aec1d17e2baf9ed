//! Group cuts shared by the property suites (`properties.rs`, `risk_properties.rs`).

/// Group sizes from a random cut list, repeated as often as needed (a zero is a group of 1).
pub fn group_sizes(cuts: &[u8]) -> impl Iterator<Item = usize> + '_ {
    cuts.iter().cycle().map(|&c| c.max(1) as usize)
}

/// Cut `len` commands by `cuts` (property 6b's other cuts): group sizes that add up to
/// exactly `len`, the last one shortened to fit.
pub fn cut_lengths(cuts: &[u8], len: usize) -> Vec<usize> {
    let mut lengths = Vec::new();
    let mut left = len;
    for size in group_sizes(cuts) {
        if left == 0 {
            break;
        }
        lengths.push(size.min(left));
        left -= size.min(left);
    }
    lengths
}
