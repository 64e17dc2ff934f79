//! A provider's preemption notice: when the file `PRISM_PREEMPTION_FILE`
//! (`prism start --preemption-file`) appears, this node drains itself with
//! the reason `preemption` and, as its deadline, the number of seconds the
//! file holds (30 when it holds none). A spot instance's notice is turned
//! into that file by a small watcher the provider's setup runs (see the
//! guide's deployment page for EC2 and GCP).

use super::service::TaskService;
use crate::proto::head::{HeadRequest, HeadResponse};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The deadline a notice file asks for.
pub fn deadline_of(contents: &str) -> Duration {
    contents
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

impl TaskService {
    /// Watches `path` every `every` until it appears, then drains this
    /// node (once).
    pub fn watch_preemption(self: &Arc<Self>, path: PathBuf, every: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Ok(contents) = tokio::fs::read_to_string(&path).await else {
                    continue;
                };
                let deadline = deadline_of(&contents);
                let node_id = me.node();
                info!(node = %node_id, file = %path.display(), ?deadline, "preemption notice: draining this node");
                let req = HeadRequest::DrainNode {
                    node_id,
                    reason: "preemption".into(),
                    deadline_ms: deadline.as_millis() as u64,
                };
                match me.transfer.head_request(&req).await {
                    Ok(HeadResponse::Ok) => return,
                    Ok(other) => warn!("the head refused to drain this node: {other:?}"),
                    Err(e) => warn!("cannot reach the head to drain this node: {e}"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_holds_its_deadline_in_seconds_or_means_thirty() {
        assert_eq!(deadline_of("120\n"), Duration::from_secs(120));
        assert_eq!(deadline_of("0.5"), Duration::from_millis(500));
        assert_eq!(deadline_of(""), Duration::from_secs(30));
        assert_eq!(deadline_of("terminate"), Duration::from_secs(30));
        assert_eq!(deadline_of("-4"), Duration::from_secs(30));
    }
}
