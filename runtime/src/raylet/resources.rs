//! What this machine has: CPUs, memory, GPUs (through the CUDA driver API,
//! loaded at run time so machines without a driver simply report none),
//! with the operator's overrides applied.

use crate::proto::common::GpuInfo;
use prism_scheduler::{Quantity, ResourceSet, CPU, GPU, MEMORY, SCALE};
use std::collections::BTreeMap;

/// Operator overrides from `prism start`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceOverrides {
    /// `--num-cpus`.
    pub num_cpus: Option<f64>,
    /// `--num-gpus` (more than detected models a GPU machine on a CPU one).
    pub num_gpus: Option<u32>,
    /// `--memory`, bytes.
    pub memory: Option<u64>,
    /// `--resources '{"accel": 4}'`.
    pub custom: BTreeMap<String, f64>,
    /// `--object-store-memory`, bytes (default: 30% of memory).
    pub object_store_memory: Option<u64>,
}

/// The resource naming the size of a node's object store, in bytes.
pub const OBJECT_STORE_MEMORY: &str = "object_store_memory";

/// A resource override is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// A negative, non-finite or too precise amount.
    #[error("resource {name}: {why}")]
    BadAmount {
        /// Which resource.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Custom resources may not reuse the built-in names.
    #[error("custom resource {0:?} clashes with a built-in resource; use --num-cpus, --num-gpus or --memory")]
    Reserved(String),
}

/// CPUs the OS lets this process use.
pub fn detect_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Physical memory in bytes, from `/proc/meminfo`.
pub fn detect_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// GPUs through the CUDA driver; none (not a panic) when there is no driver.
#[cfg(feature = "gpu-detect")]
pub fn detect_gpus() -> Vec<GpuInfo> {
    // SAFETY: is_culib_present only tries to dlopen the driver library and
    // reports whether it loaded; it calls no CUDA function.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Vec::new();
    }
    let probe =
        std::panic::catch_unwind(|| -> Result<Vec<GpuInfo>, cudarc::driver::DriverError> {
            use cudarc::driver::result::{device, init};
            init()?;
            let count = device::get_count()?;
            (0..count)
                .map(|i| {
                    let dev = device::get(i)?;
                    // SAFETY: `dev` is a valid device handle just returned by cuDeviceGet.
                    let memory = unsafe { device::total_mem(dev) }?;
                    Ok(GpuInfo {
                        index: i as u32,
                        name: device::get_name(dev)?,
                        memory_bytes: memory as u64,
                    })
                })
                .collect()
        });
    match probe {
        Ok(Ok(gpus)) => gpus,
        Ok(Err(e)) => {
            tracing::warn!("CUDA driver present but unusable ({e}); reporting no GPUs");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!("CUDA probe panicked; reporting no GPUs");
            Vec::new()
        }
    }
}

/// GPUs: none detected in a build without the `gpu-detect` feature (a
/// node offers GPUs only when told how many).
#[cfg(not(feature = "gpu-detect"))]
pub fn detect_gpus() -> Vec<GpuInfo> {
    Vec::new()
}

fn amount(name: &str, x: f64) -> Result<Quantity, ResourceError> {
    Quantity::from_f64(x).map_err(|e| ResourceError::BadAmount {
        name: name.to_string(),
        why: e.to_string(),
    })
}

/// Detects this machine's resources and applies the overrides.
pub fn node_resources(o: &ResourceOverrides) -> Result<(ResourceSet, Vec<GpuInfo>), ResourceError> {
    let mut set = ResourceSet::new();
    set.set(
        CPU,
        amount(CPU, o.num_cpus.unwrap_or(detect_cpus() as f64))?,
    );
    let memory = o.memory.unwrap_or_else(detect_memory);
    set.set(
        MEMORY,
        Quantity::from_raw((memory as i64).saturating_mul(SCALE)),
    );
    let store = o.object_store_memory.unwrap_or(detect_memory() / 10 * 3);
    set.set(
        OBJECT_STORE_MEMORY,
        Quantity::from_raw((store as i64).saturating_mul(SCALE)),
    );
    let mut gpus = if o.num_gpus == Some(0) {
        Vec::new()
    } else {
        detect_gpus()
    };
    if let Some(n) = o.num_gpus {
        gpus.truncate(n as usize);
        while gpus.len() < n as usize {
            gpus.push(GpuInfo {
                index: gpus.len() as u32,
                name: "simulated".into(),
                memory_bytes: 0,
            });
        }
    }
    set.set(GPU, Quantity::whole(gpus.len() as u32));
    for (name, x) in &o.custom {
        if [CPU, GPU, MEMORY, OBJECT_STORE_MEMORY].contains(&name.as_str()) {
            return Err(ResourceError::Reserved(name.clone()));
        }
        set.set(name, amount(name, *x)?);
    }
    Ok((set, gpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_and_gpus_can_be_simulated() {
        let o = ResourceOverrides {
            num_cpus: Some(3.0),
            num_gpus: Some(4),
            memory: Some(1 << 30),
            custom: BTreeMap::from([("accel".to_string(), 4.0)]),
            object_store_memory: Some(1 << 20),
        };
        let (set, gpus) = node_resources(&o).unwrap();
        assert_eq!(set.get(CPU), Quantity::whole(3));
        assert_eq!(set.get(GPU), Quantity::whole(4));
        assert_eq!(set.get("accel"), Quantity::whole(4));
        assert_eq!(set.get(MEMORY).raw(), (1i64 << 30) * SCALE);
        assert_eq!(gpus.len(), 4);
        assert_eq!(set.get(OBJECT_STORE_MEMORY).raw(), (1i64 << 20) * SCALE);
        let bad = ResourceOverrides {
            custom: BTreeMap::from([("CPU".to_string(), 1.0)]),
            ..Default::default()
        };
        assert!(matches!(
            node_resources(&bad),
            Err(ResourceError::Reserved(_))
        ));
    }

    #[test]
    fn detection_without_a_driver_reports_no_gpus_and_does_not_panic() {
        let _ = detect_gpus();
        assert!(detect_cpus() >= 1);
        assert!(detect_memory() > 0);
    }
}
