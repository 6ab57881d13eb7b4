//! Kubernetes resource quantities (`18Gi`, `1500M`, `2`), as far as gpu-slicer reads them.
//!
//! Grammar from k8s.io/apimachinery/pkg/api/resource (quantity.go): a signed decimal number followed by a
//! binary suffix (Ki..Ei), a decimal suffix (n, u, m, k, M, G, T, P, E) or a decimal exponent (e3, E-2).
//!
//! Imports: nothing of this crate (the lowest layer).

/// Parses a quantity into its value in base units (bytes for memory), rounded up to a whole unit.
/// Returns `None` for anything that is not a quantity, or a negative one.
pub fn parse(s: &str) -> Option<u128> {
    parse_scaled(s, 0)
}

/// Parses a quantity into thousandths of its unit (millicores for `cpu`), rounded up as the scheduler's
/// `MilliValue()` rounds: `"1500m"` is 1500, `"2"` 2000, `"0.1"` 100.
pub fn parse_milli(s: &str) -> Option<u128> {
    parse_scaled(s, 3)
}

/// `value x 10^scale`, rounded up to a whole number.
fn parse_scaled(s: &str, scale: i32) -> Option<u128> {
    scaled(s, scale).map(|(value, _)| value)
}

/// `value x 10^scale` rounded up, and whether that was exact (no fraction was rounded away).
fn scaled(s: &str, scale: i32) -> Option<(u128, bool)> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number = number.strip_prefix('+').unwrap_or(number);
    if number.is_empty() || number.starts_with('-') {
        return None;
    }
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
        || int_part.len() + frac_part.len() > 30
    {
        return None;
    }
    // value = digits * 10^(exp10 - frac_len) * 2^exp2
    let digits: u128 = format!("{int_part}{frac_part}").parse().ok()?;
    let (exp2, exp10): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        _ => {
            let e = suffix.strip_prefix(['e', 'E'])?;
            let e: i32 = e.parse().ok()?;
            if !(-30..=30).contains(&e) {
                return None;
            }
            (0, e)
        }
    };
    let scale10 = exp10 + scale - i32::try_from(frac_part.len()).ok()?;
    let value = digits.checked_mul(1u128.checked_shl(exp2)?)?;
    if scale10 >= 0 {
        let value = value.checked_mul(10u128.checked_pow(scale10.unsigned_abs())?)?;
        Some((value, true))
    } else {
        let div = 10u128.checked_pow(scale10.unsigned_abs())?;
        Some((value.div_ceil(div), value % div == 0))
    }
}

/// Parses a count of devices: any quantity whose value is a whole number, as the API server requires
/// of extended resources (`"1"`, `"4"`, `"1e3"` = 1000, `"1E0"` = 1, `"2k"` = 2000, `"2.0"`), not
/// `"1500m"` or `"0.5"` (`"1E"` is the Exa suffix). `None` past `u64::MAX`.
pub fn parse_count(s: &str) -> Option<u64> {
    // The common case ("1", "4") without the general parser's allocation: it runs on every request.
    let t = s.trim();
    if !t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok();
    }
    match scaled(s, 0)? {
        (value, true) => u64::try_from(value).ok(),
        (_, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_decimal_and_exponent_forms() {
        assert_eq!(parse("18Gi"), Some(18 << 30));
        assert_eq!(parse("1.5Gi"), Some(3 << 29));
        assert_eq!(parse("20G"), Some(20_000_000_000));
        assert_eq!(parse("512Mi"), Some(512 << 20));
        assert_eq!(parse("1e3"), Some(1000));
        assert_eq!(parse("1500m"), Some(2)); // rounded up
        assert_eq!(parse("+3"), Some(3));
        assert_eq!(parse(".5Ki"), Some(512));
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        for bad in ["", "Gi", "-1Gi", "1.2.3", "12GB", "1Xi", "abc", "1e99", "."] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn millis_round_up_like_milli_value() {
        assert_eq!(parse_milli("1500m"), Some(1500));
        assert_eq!(parse_milli("3"), Some(3000));
        assert_eq!(parse_milli("0.25"), Some(250));
        assert_eq!(parse_milli("100u"), Some(1)); // rounded up
        assert_eq!(parse_milli("1Ki"), Some(1_024_000));
        assert_eq!(parse_milli("-1"), None);
    }

    #[test]
    fn counts_are_whole_numbers() {
        assert_eq!(parse_count("2"), Some(2));
        assert_eq!(parse_count("1500m"), None);
        assert_eq!(parse_count("-1"), None);
    }

    /// Any quantity whose value is whole is a count, in every form the API server accepts.
    #[test]
    fn counts_take_exponents_and_suffixes_when_the_value_is_whole() {
        for (q, n) in [
            ("1e3", 1000),
            ("1E0", 1),
            ("1e0", 1),
            ("2e+1", 20),
            ("2k", 2000),
            ("2.0", 2),
            ("1Ki", 1024),
            ("3000m", 3),
            ("+4", 4),
            ("0", 0),
            ("1E", 1_000_000_000_000_000_000), // the Exa suffix, not an exponent
        ] {
            assert_eq!(parse_count(q), Some(n), "{q}");
        }
        for q in [
            "0.5", "1500m", "150e-2", "0.9999", "1001u", "1e", "e3", "1.5k3", "", "1E30", "-1e0",
        ] {
            assert_eq!(parse_count(q), None, "{q}");
        }
    }
}
