//! What to do next for one deployment, given its replicas: start missing
//! ones, stop extras, and roll an update over one replica at a time with
//! one extra (a new replica is up before an old one goes), so a rolling
//! update never has fewer replicas serving than it had. Pure.

/// A deployment's replicas as the controller sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// Replicas wanted.
    pub target: u32,
    /// Running replicas of the current version.
    pub current: u32,
    /// Running replicas of an older version.
    pub old: u32,
    /// Replicas of the current version being started.
    pub starting: u32,
}

/// One action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start this many replicas of the current version.
    Start(u32),
    /// Drain and stop this many old-version replicas.
    StopOld(u32),
    /// Drain and stop this many current-version replicas.
    StopCurrent(u32),
}

/// The steps that move `v` toward `target` replicas, all current.
pub fn plan(v: &View) -> Vec<Step> {
    let mut steps = Vec::new();
    if v.old == 0 || v.target == 0 {
        if v.old > 0 {
            steps.push(Step::StopOld(v.old));
        }
        if v.current + v.starting < v.target {
            steps.push(Step::Start(v.target - v.current - v.starting));
        } else if v.current > v.target {
            steps.push(Step::StopCurrent(v.current - v.target));
        }
        return steps;
    }
    // Rolling: one new replica at a time; each one up retires an old one.
    if v.current + v.old > v.target {
        let extra = v.current + v.old - v.target;
        steps.push(Step::StopOld(extra.min(v.old)));
    }
    if v.starting == 0 && v.current < v.target {
        steps.push(Step::Start(1));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_new_deployment_starts_all_its_replicas_at_once() {
        let v = View {
            target: 3,
            current: 0,
            old: 0,
            starting: 0,
        };
        assert_eq!(plan(&v), vec![Step::Start(3)]);
        let v = View {
            target: 3,
            current: 1,
            old: 0,
            starting: 2,
        };
        assert_eq!(plan(&v), vec![]);
    }

    #[test]
    fn scaling_down_stops_the_extras() {
        let v = View {
            target: 1,
            current: 4,
            old: 0,
            starting: 0,
        };
        assert_eq!(plan(&v), vec![Step::StopCurrent(3)]);
    }

    /// Applies steps as if starts finished at once: the serving count
    /// never falls below what it was, and the update completes.
    fn roll(target: u32, old: u32) -> Vec<u32> {
        let mut v = View {
            target,
            current: 0,
            old,
            starting: 0,
        };
        let mut serving = vec![v.current + v.old];
        for _ in 0..100 {
            let steps = plan(&v);
            if steps.is_empty() {
                break;
            }
            for s in steps {
                match s {
                    Step::Start(n) => v.starting += n,
                    Step::StopOld(n) => v.old -= n,
                    Step::StopCurrent(n) => v.current -= n,
                }
            }
            serving.push(v.current + v.old);
            v.current += v.starting;
            v.starting = 0;
            serving.push(v.current + v.old);
        }
        assert_eq!((v.current, v.old), (target, 0), "the update completes");
        serving
    }

    #[test]
    fn a_rolling_update_keeps_every_replica_serving() {
        let serving = roll(3, 3);
        assert!(serving.iter().all(|&n| n >= 3), "{serving:?}");
        assert!(
            serving.iter().all(|&n| n <= 4),
            "at most one extra: {serving:?}"
        );
    }

    proptest! {
        #[test]
        fn any_update_completes_without_dropping_below_the_smaller_count(target in 0u32..6, old in 0u32..6) {
            let serving = roll(target, old);
            let floor = target.min(old);
            prop_assert!(serving.iter().all(|&n| n >= floor), "{:?}", serving);
        }
    }
}
