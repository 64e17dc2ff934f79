//! Resource sets: named quantities such as `{CPU: 2, GPU: 0.5, accel: 4}`.

use crate::quantity::Quantity;
use std::fmt;

/// The name of the CPU resource.
pub const CPU: &str = "CPU";
/// The name of the GPU resource; its instances are assigned by index.
pub const GPU: &str = "GPU";
/// The name of the memory resource, in bytes.
pub const MEMORY: &str = "memory";

/// A set of named, non-zero resource quantities, kept sorted by name.
///
/// Resource sets are small (a handful of kinds), so a sorted vector beats a
/// map for both lookups and iteration.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ResourceSet {
    entries: Vec<(Box<str>, Quantity)>,
}

impl ResourceSet {
    /// The empty set.
    pub fn new() -> ResourceSet {
        ResourceSet::default()
    }

    /// Builder form of [`ResourceSet::set`].
    pub fn with(mut self, name: &str, amount: Quantity) -> ResourceSet {
        self.set(name, amount);
        self
    }

    /// Sets `name` to `amount` (removing it when zero).
    pub fn set(&mut self, name: &str, amount: Quantity) {
        match self.entries.binary_search_by(|(n, _)| (**n).cmp(name)) {
            Ok(i) if amount.is_zero() => {
                self.entries.remove(i);
            }
            Ok(i) => self.entries[i].1 = amount,
            Err(_) if amount.is_zero() => {}
            Err(i) => self.entries.insert(i, (name.into(), amount)),
        }
    }

    /// The amount of `name` (zero when absent).
    pub fn get(&self, name: &str) -> Quantity {
        match self.entries.binary_search_by(|(n, _)| (**n).cmp(name)) {
            Ok(i) => self.entries[i].1,
            Err(_) => Quantity::ZERO,
        }
    }

    /// Iterates `(name, amount)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Quantity)> {
        self.entries.iter().map(|(n, q)| (&**n, *q))
    }

    /// True if no resource is named.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first resource (by name) of which `self` asks more than `other`
    /// has: `(name, asked, have)`. `None` means `self` fits in `other`.
    pub fn first_shortfall(&self, other: &ResourceSet) -> Option<(&str, Quantity, Quantity)> {
        self.iter().find_map(|(name, asked)| {
            let have = other.get(name);
            (asked > have).then_some((name, asked, have))
        })
    }

    /// True if every amount in `self` is at most the same amount in `other`.
    pub fn fits_in(&self, other: &ResourceSet) -> bool {
        self.first_shortfall(other).is_none()
    }

    /// Adds every amount of `other` to `self`.
    pub fn add(&mut self, other: &ResourceSet) {
        for (name, q) in other.iter() {
            let now = self.get(name);
            self.set(name, now + q);
        }
    }

    /// Subtracts `other` from `self`; the caller has checked that it fits.
    pub fn subtract(&mut self, other: &ResourceSet) {
        for (name, q) in other.iter() {
            let now = self.get(name);
            self.set(name, now - q);
        }
    }
}

impl fmt::Display for ResourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, q)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {q}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for ResourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'a> FromIterator<(&'a str, Quantity)> for ResourceSet {
    fn from_iter<I: IntoIterator<Item = (&'a str, Quantity)>>(iter: I) -> Self {
        let mut set = ResourceSet::new();
        for (n, q) in iter {
            let now = set.get(n);
            set.set(n, now + q);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_remove_and_order() {
        let mut r = ResourceSet::new()
            .with("b", Quantity::whole(2))
            .with("a", Quantity::ONE);
        assert_eq!(r.to_string(), "{a: 1, b: 2}");
        r.set("a", Quantity::ZERO);
        assert_eq!(r.get("a"), Quantity::ZERO);
        assert_eq!(r.iter().count(), 1);
    }

    #[test]
    fn shortfall_names_the_resource() {
        let have = ResourceSet::new().with(CPU, Quantity::whole(4));
        let ask = ResourceSet::new()
            .with(CPU, Quantity::whole(2))
            .with(GPU, Quantity::ONE);
        assert_eq!(
            ask.first_shortfall(&have),
            Some((GPU, Quantity::ONE, Quantity::ZERO))
        );
    }
}
