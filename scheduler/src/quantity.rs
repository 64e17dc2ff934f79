//! Fixed-point resource quantities.
//!
//! Every amount of a resource is an integer count of 1/10,000 units, so that
//! taking 0.1 GPU ten times leaves exactly zero and no float drift accumulates
//! in a ledger that lives for weeks (invariant SC-1).

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// Units per 1.0 of a resource.
pub const SCALE: i64 = 10_000;

/// A non-negative amount of a resource with four decimal digits of precision.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(i64);

/// A quantity given as a float could not be represented.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantityError {
    /// Negative, NaN or infinite amounts are not resources.
    #[error("resource amount {0} is not a finite, non-negative number")]
    NotFinite(f64),
    /// Amounts are kept to four decimals; finer ones would silently round.
    #[error("resource amount {0} has more than four decimal places")]
    TooPrecise(f64),
}

impl Quantity {
    /// Nothing.
    pub const ZERO: Quantity = Quantity(0);
    /// Exactly one unit.
    pub const ONE: Quantity = Quantity(SCALE);

    /// A whole number of units.
    pub const fn whole(n: u32) -> Quantity {
        Quantity(n as i64 * SCALE)
    }

    /// From a raw count of 1/10,000 units.
    pub const fn from_raw(raw: i64) -> Quantity {
        Quantity(raw)
    }

    /// The raw count of 1/10,000 units.
    pub const fn raw(self) -> i64 {
        self.0
    }

    /// From a float such as `0.25`; rejects negatives and more than four decimals.
    pub fn from_f64(x: f64) -> Result<Quantity, QuantityError> {
        if !x.is_finite() || x < 0.0 {
            return Err(QuantityError::NotFinite(x));
        }
        let scaled = x * SCALE as f64;
        let rounded = scaled.round();
        if (scaled - rounded).abs() > 1e-6 * scaled.max(1.0) {
            return Err(QuantityError::TooPrecise(x));
        }
        Ok(Quantity(rounded as i64))
    }

    /// As a float, for display and reports only.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / SCALE as f64
    }

    /// True for an exact whole number of units.
    pub fn is_whole(self) -> bool {
        self.0 % SCALE == 0
    }

    /// The whole part, for a whole quantity.
    pub fn whole_units(self) -> i64 {
        self.0 / SCALE
    }

    /// `self - rhs`, or `None` if that would go below zero.
    pub fn checked_sub(self, rhs: Quantity) -> Option<Quantity> {
        (self.0 >= rhs.0).then_some(Quantity(self.0 - rhs.0))
    }

    /// True if this is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl Add for Quantity {
    type Output = Quantity;
    /// Saturating: amounts from a confused or hostile peer cannot overflow.
    fn add(self, rhs: Quantity) -> Quantity {
        Quantity(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Quantity {
    fn add_assign(&mut self, rhs: Quantity) {
        *self = *self + rhs;
    }
}

impl Sub for Quantity {
    type Output = Quantity;
    /// Saturating at zero: a ledger never shows negative amounts.
    fn sub(self, rhs: Quantity) -> Quantity {
        Quantity(self.0.saturating_sub(rhs.0).max(0))
    }
}

impl SubAssign for Quantity {
    fn sub_assign(&mut self, rhs: Quantity) {
        *self = *self - rhs;
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / SCALE;
        let frac = self.0 % SCALE;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:04}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sc_1_tenth_taken_ten_times_is_exactly_zero() {
        let mut gpu = Quantity::ONE;
        let tenth = Quantity::from_f64(0.1).unwrap();
        for _ in 0..10 {
            gpu = gpu.checked_sub(tenth).expect("enough left");
        }
        assert_eq!(gpu, Quantity::ZERO);
        assert!(gpu.checked_sub(tenth).is_none());
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(Quantity::from_f64(2.5).unwrap().to_string(), "2.5");
        assert_eq!(Quantity::from_f64(0.0001).unwrap().to_string(), "0.0001");
        assert_eq!(Quantity::whole(4).to_string(), "4");
        assert!(Quantity::from_f64(-1.0).is_err());
        assert!(Quantity::from_f64(f64::NAN).is_err());
        assert!(Quantity::from_f64(0.00001).is_err());
    }

    #[test]
    fn huge_amounts_saturate_instead_of_overflowing() {
        let max = Quantity::from_raw(i64::MAX);
        assert_eq!(max + max, max);
        assert_eq!(Quantity::ZERO - max, Quantity::ZERO);
    }
}
