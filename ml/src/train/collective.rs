//! A group of ring members used on its own: one all-reduce (or a timed
//! series) over `n` worker actors, for tests and bandwidth benchmarks.

use super::context::Job;
use super::ring::Summable;
use super::worker::TrainWorker;
use crate::{MlError, Result};
use std::time::Duration;

/// Element types with an all-reduce job.
pub trait RingElement: Summable + bytemuck::Pod {
    /// The job reducing `data`.
    fn job(data: Vec<Self>, average: bool, bucket_bytes: u64, repeat: u32) -> Job;
}

impl RingElement for f32 {
    fn job(data: Vec<f32>, average: bool, bucket_bytes: u64, repeat: u32) -> Job {
        Job::AllReduceF32 {
            data,
            average,
            bucket_bytes,
            repeat,
        }
    }
}

impl RingElement for f64 {
    fn job(data: Vec<f64>, average: bool, bucket_bytes: u64, repeat: u32) -> Job {
        Job::AllReduceF64 {
            data,
            average,
            bucket_bytes,
            repeat,
        }
    }
}

/// Runs `repeat` all-reduces of `inputs[r]` on `inputs.len()` fresh worker
/// actors (one CPU each); returns every rank's result and the slowest
/// rank's seconds (compute thread, setup excluded). Members on one node
/// exchange chunks through shared-memory channels.
pub fn all_reduce<T: RingElement>(
    inputs: Vec<Vec<T>>,
    average: bool,
    bucket_bytes: u64,
    repeat: u32,
) -> Result<(Vec<Vec<T>>, f64)> {
    run(inputs, average, bucket_bytes, repeat, Transport::Auto)
}

/// How ring members exchange chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Shared-memory channels when every member is on one node, else the
    /// object store.
    Auto,
    /// Always tensor objects in the store, announced by actor calls (the
    /// path between nodes, where chunks travel over QUIC).
    Store,
}

/// [`all_reduce`] with the transport chosen.
pub fn run<T: RingElement>(
    inputs: Vec<Vec<T>>,
    average: bool,
    bucket_bytes: u64,
    repeat: u32,
    transport: Transport,
) -> Result<(Vec<Vec<T>>, f64)> {
    let n = inputs.len();
    let workers: Vec<_> = (0..n)
        .map(|r| {
            TrainWorker::options()
                .num_cpus(0.0)
                .max_concurrency(64)
                .spawn(r as u32, n as u32)
        })
        .collect::<prism::Result<_>>()?;
    super::worker::connect_ring(&workers, transport == Transport::Auto)?;
    for (w, data) in workers.iter().zip(inputs) {
        if !w
            .start(T::job(data, average, bucket_bytes, repeat))?
            .get()?
        {
            return Err(MlError::Train("a ring member could not start".into()));
        }
    }
    let mut out = vec![None; n];
    let mut slowest: f64 = 0.0;
    while out.iter().any(Option::is_none) {
        for (r, w) in workers.iter().enumerate() {
            if out[r].is_some() {
                continue;
            }
            let p = w.poll(u64::MAX)?.get()?;
            match p.done {
                None => {}
                Some(Ok(bytes)) => {
                    slowest = slowest.max(p.seconds);
                    out[r] = Some(
                        bytes
                            .chunks_exact(std::mem::size_of::<T>())
                            .map(bytemuck::pod_read_unaligned::<T>)
                            .collect(),
                    );
                }
                Some(Err(e)) => return Err(MlError::Train(format!("rank {r}: {e}"))),
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for w in &workers {
        let _ = prism::kill(w, true);
    }
    Ok((out.into_iter().flatten().collect(), slowest))
}
