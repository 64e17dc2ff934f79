//! A preemption notice for a running trainer: while [`DdpTrainer::fit`]
//! (or `PipelineTrainer::fit`) runs, SIGTERM (what the head sends a spot-class job it preempts, with a
//! grace period) no longer kills the driver at once; it asks the trainer to
//! stop every rank at the same step soon after, save a checkpoint there and
//! fail with [`crate::MlError::Preempted`]. When the job runs again
//! (`PRISM_PREEMPTED=1`, set by the head), the trainer resumes from it.
//!
//! [`DdpTrainer::fit`]: super::DdpTrainer::fit

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static ARMED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// SIGTERM handled as a preemption notice while this lives.
pub struct Armed {
    previous: libc::sigaction,
}

/// Handles SIGTERM as a notice until the guard drops (`None` if another
/// trainer of this process holds it already, or the handler cannot be set).
pub fn arm() -> Option<Armed> {
    if ARMED.swap(true, Ordering::SeqCst) {
        return None;
    }
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value;
    // the handler only stores to an atomic (async-signal-safe), and the
    // previous action is kept to be restored by the guard.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_term as extern "C" fn(libc::c_int) as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGTERM, &action, &mut previous) != 0 {
            ARMED.store(false, Ordering::SeqCst);
            return None;
        }
        Some(Armed { previous })
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        // SAFETY: restores the action saved by `arm` for the same signal.
        unsafe {
            libc::sigaction(libc::SIGTERM, &self.previous, std::ptr::null_mut());
        }
        ARMED.store(false, Ordering::SeqCst);
    }
}

/// Whether a notice came.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Whether this run follows a preemption (the trainer then resumes).
pub fn resumed() -> bool {
    std::env::var(prism::raylet::workers::vars::PREEMPTED).is_ok_and(|v| v == "1")
}
