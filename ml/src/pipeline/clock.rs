//! How a pipeline stage counts the time it computes (its busy time,
//! beside the step's: the stage's measured idle share).

use std::time::{Duration, Instant};

/// How a stage counts the time it computes.
#[derive(Clone, Copy)]
pub(super) enum Clock {
    /// The calling thread's CPU time.
    ThreadCpu,
    /// Wall time since the instant.
    Wall(Instant),
}

impl Clock {
    /// The thread's CPU time with one libtorch thread (this one does all
    /// the computing, and time it waits for a core is left out); wall
    /// time with more (the others' work shows only there).
    pub(super) fn for_threads(threads: i32) -> Clock {
        match threads {
            1 => Clock::ThreadCpu,
            _ => Clock::Wall(Instant::now()),
        }
    }

    pub(super) fn now(self) -> Duration {
        match self {
            Clock::ThreadCpu => thread_cpu_time(),
            Clock::Wall(epoch) => epoch.elapsed(),
        }
    }
}

/// The CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration,
    // and CLOCK_THREAD_CPUTIME_ID is supported on every Linux this builds for.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_clock_leaves_out_a_wait_and_the_wall_clock_does_not() {
        let (cpu, wall) = (Clock::for_threads(1), Clock::for_threads(2));
        assert!(matches!(cpu, Clock::ThreadCpu) && matches!(wall, Clock::Wall(_)));
        let (c0, w0) = (cpu.now(), wall.now());
        std::thread::sleep(Duration::from_millis(200));
        let (c1, w1) = (cpu.now(), wall.now());
        assert!(w1 - w0 >= Duration::from_millis(200));
        assert!(c1 - c0 < Duration::from_millis(100), "{:?}", c1 - c0);
        // Computing counts.
        let deadline = Instant::now() + Duration::from_secs(10);
        while cpu.now() - c1 < Duration::from_millis(20) && Instant::now() < deadline {
            std::hint::black_box(0u64);
        }
        assert!(cpu.now() - c1 >= Duration::from_millis(20));
    }
}
