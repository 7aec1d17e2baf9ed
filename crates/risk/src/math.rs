//! Checked i128 helpers with the crate's rounding rules.

/// `a × b`, panicking on i128 overflow (a programmer or configuration error).
pub(crate) fn mul(a: i128, b: i128) -> i128 {
    match a.checked_mul(b) {
        Some(v) => v,
        None => panic!("amdahl-risk: i128 overflow in {a} × {b}"),
    }
}

/// Converts back to `Money`/`i64`, panicking on overflow (a programmer or configuration
/// error: prices and quantities are validated before they reach the contract math).
pub(crate) fn to_money(v: i128, what: &str) -> i64 {
    match i64::try_from(v) {
        Ok(m) => m,
        Err(_) => panic!("amdahl-risk: {what} {v} overflows i64"),
    }
}

/// `n / d` rounded half away from zero. `d ≠ 0`; either sign.
#[inline]
pub(crate) fn div_round_half_away(n: i128, d: i128) -> i128 {
    assert!(d != 0, "amdahl-risk: division by zero");
    // Nearly every operand of the contract math fits in 64 bits, and a 64-bit division is
    // several times cheaper than the 128-bit library call; the rule is the same.
    if let (Ok(n), Ok(d)) = (i64::try_from(n), i64::try_from(d))
        && n != i64::MIN
        && d != i64::MIN
    {
        let (n, d) = if d < 0 { (-n, -d) } else { (n, d) };
        let (q, r) = (n / d, n % d);
        return i128::from(if r.abs() >= d - r.abs() { q + n.signum() } else { q });
    }
    let (n, d) = if d < 0 { (-n, -d) } else { (n, d) };
    let q = n / d;
    let r = n % d;
    // |r| ≥ d − |r| ⇔ the fractional part is at least one half.
    if r.abs() >= d - r.abs() { q + n.signum() } else { q }
}

/// `⌈n / d⌉` for `n ≥ 0`, `d > 0`.
#[inline]
pub(crate) fn ceil_div_nonneg(n: i128, d: i128) -> i128 {
    debug_assert!(n >= 0 && d > 0);
    if let (Ok(n), Ok(d)) = (u64::try_from(n), u64::try_from(d)) {
        return i128::from(n / d + u64::from(n % d != 0));
    }
    n / d + i128::from(n % d != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_away_both_signs() {
        assert_eq!(div_round_half_away(5, 2), 3); // 2.5 → 3
        assert_eq!(div_round_half_away(-5, 2), -3); // −2.5 → −3
        assert_eq!(div_round_half_away(5, -2), -3);
        assert_eq!(div_round_half_away(7, 3), 2); // 2.33 → 2
        assert_eq!(div_round_half_away(-8, 3), -3); // −2.67 → −3
        assert_eq!(div_round_half_away(-7, 3), -2);
        assert_eq!(div_round_half_away(0, 3), 0);
        assert_eq!(div_round_half_away(1, 2), 1);
        assert_eq!(div_round_half_away(1, 3), 0);
    }

    #[test]
    fn ceil_div() {
        assert_eq!(ceil_div_nonneg(0, 7), 0);
        assert_eq!(ceil_div_nonneg(14, 7), 2);
        assert_eq!(ceil_div_nonneg(15, 7), 3);
    }
}
