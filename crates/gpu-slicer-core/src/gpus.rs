//! An amount of GPU-equivalents: the one unit budgets, usage and spend are counted in, whatever form a
//! pod's GPUs take ([`crate::equivalents`] says what each form counts). Below the policy, which
//! writes budgets in it.
//!
//! Imports: nothing of this crate (the lowest layer).

use std::fmt;

/// An amount of GPU-equivalents, exact to 1/[`Gpus::UNIT`] of a GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gpus(u64);

impl Gpus {
    /// Units per GPU: lcm(1..=16) x 1000 = 720,720,000, so 1/7, 1/4, 1/N for N <= 16 and their sums
    /// are exact (time-sliced MIG: 1/7 x 1/4 = 1/28 too).
    pub const UNIT: u64 = 720_720_000;
    pub const ZERO: Gpus = Gpus(0);
    pub const ONE: Gpus = Gpus(Gpus::UNIT);

    /// `numerator / denominator` GPUs, rounded to the nearest unit (exact wherever the denominator
    /// divides [`Gpus::UNIT`]); 0 for a zero denominator.
    pub fn ratio(numerator: u128, denominator: u128) -> Gpus {
        if denominator == 0 {
            return Gpus::ZERO;
        }
        let units = (numerator * u128::from(Gpus::UNIT) + denominator / 2) / denominator;
        Gpus(u64::try_from(units).unwrap_or(u64::MAX))
    }

    /// `n` whole GPUs.
    pub fn whole(n: u64) -> Gpus {
        Gpus(n.saturating_mul(Gpus::UNIT))
    }

    pub fn units(self) -> u64 {
        self.0
    }

    pub fn from_units(units: u64) -> Gpus {
        Gpus(units)
    }

    pub fn times(self, n: u64) -> Gpus {
        Gpus(self.0.saturating_mul(n))
    }

    /// This amount shared by `n` (one of `n` replicas).
    pub fn shared_by(self, n: u32) -> Gpus {
        Gpus::ratio(
            u128::from(self.0),
            u128::from(n.max(1)) * u128::from(Gpus::UNIT),
        )
    }

    pub fn saturating_add(self, other: Gpus) -> Gpus {
        Gpus(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Gpus) -> Gpus {
        Gpus(self.0.saturating_sub(other.0))
    }

    /// As a float, for metrics and prices.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Gpus::UNIT as f64
    }

    /// Parses a non-negative decimal (`"2"`, `"0.5"`, `"3.142857"`), rounded to the nearest unit.
    pub fn parse(text: &str) -> Result<Gpus, String> {
        let bad = || {
            format!(
                "{text:?} is not a non-negative decimal number of GPU-equivalents (e.g. \"2\" or \"0.5\")"
            )
        };
        let t = text.trim();
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || frac.len() > 12 {
            return Err(bad());
        }
        let whole: u64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let frac_value: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| bad())?
        };
        let scale = 10u128.pow(frac.len() as u32);
        let units = Gpus::whole(whole).0;
        if units / Gpus::UNIT != whole {
            return Err(bad());
        }
        Ok(Gpus(units).saturating_add(Gpus::ratio(frac_value, scale)))
    }
}

impl fmt::Display for Gpus {
    /// Up to six decimals, trailing zeros dropped: `2`, `0.5`, `0.142857`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PLACES: u64 = 1_000_000;
        let millionths = (u128::from(self.0) * u128::from(PLACES) + u128::from(Gpus::UNIT / 2))
            / u128::from(Gpus::UNIT);
        let (int, frac) = (
            millionths / u128::from(PLACES),
            millionths % u128::from(PLACES),
        );
        if frac == 0 {
            return write!(f, "{int}");
        }
        let text = format!("{frac:06}");
        write!(f, "{int}.{}", text.trim_end_matches('0'))
    }
}

impl std::iter::Sum for Gpus {
    fn sum<I: Iterator<Item = Gpus>>(iter: I) -> Gpus {
        iter.fold(Gpus::ZERO, Gpus::saturating_add)
    }
}
