//! A short spin before a blocking wait. On one machine a call's answer
//! comes within tens of microseconds; parking the thread and being woken
//! costs about as much again, so `get` looks for a few tens of
//! microseconds, yielding the core between looks, before it parks.
//!
//! Only the waiting caller spins: a worker that spun for its next call
//! took the core its caller and the raylet needed (measured slower on two
//! cores), so worker loops park at once.

use std::time::{Duration, Instant};

/// How long a wait spins before it parks.
pub(crate) const SPIN: Duration = Duration::from_micros(60);

/// `look()` until it gives something or `until` has passed (at least one
/// look).
pub(crate) fn briefly<T>(until: Instant, mut look: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(v) = look() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spin_gives_what_comes_or_nothing_after_its_time() {
        // A long window: a busy machine may not run this thread for a while.
        let mut n = 0;
        let long = Instant::now() + Duration::from_secs(30);
        let got = briefly(long, || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(got, Some(3));
        let t = Instant::now();
        assert_eq!(briefly(t + SPIN, || None::<u8>), None);
        assert!(t.elapsed() >= SPIN);
        // A window already over still looks once.
        assert_eq!(briefly(t, || Some(1)), Some(1));
    }
}
