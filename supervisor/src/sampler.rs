//! Taking a [`Reading`]: the supervisor's descendants from procfs and the cgroup, now.

use std::time::Instant;

use crate::cgroup::{self, Location};
use crate::proctree;
use crate::usage::Reading;

/// Reads usage of everything below one process.
pub struct Sampler {
    root: i32,
    /// False when /proc cannot be read (a root without it mounted): nothing can be measured, and
    /// reporting zeros would tell the operator's sizing the worker uses nothing.
    procfs: bool,
    cgroup: Option<Location>,
    page_size: u64,
    origin: Instant,
}

impl Sampler {
    /// Samples the descendants of `root` (the supervisor itself) and, when `use_cgroup`, the
    /// container's cgroup if one can be found.
    pub fn new(root: i32, use_cgroup: bool) -> Self {
        let procfs = std::path::Path::new("/proc/self/stat").exists();
        if !procfs {
            tracing::warn!("/proc is not mounted: usage cannot be measured and is not reported");
        }
        let cgroup = if use_cgroup && procfs {
            cgroup::discover()
                .map_err(|why| {
                    // Once per process, and not at debug: without the cgroup the sizing is blind
                    // to OOM kills and to peaks between samples.
                    tracing::warn!(
                        "no cgroup of this container found ({why}): usage falls back to procfs, \
                         and OOM kills and the kernel's memory peak cannot be seen"
                    )
                })
                .ok()
        } else {
            None
        };
        tracing::debug!(?cgroup, "usage sampler");
        Sampler {
            root,
            procfs,
            cgroup,
            page_size: procfs::page_size(),
            origin: Instant::now(),
        }
    }

    pub fn ticks_per_sec() -> u64 {
        procfs::ticks_per_second()
    }

    pub fn cgroup(&self) -> Option<&Location> {
        self.cgroup.as_ref()
    }

    /// A reading now; `None` when usage cannot be measured here.
    pub fn read(&self) -> Option<Reading> {
        if !self.procfs {
            return None;
        }
        let tree = proctree::descendants_of(self.root);
        Some(Reading {
            at: self.origin.elapsed(),
            procs: tree
                .iter()
                .map(|p| (p.pid, p.starttime, p.cpu_ticks()))
                .collect(),
            rss_bytes: tree
                .iter()
                .map(|p| p.rss_pages.saturating_mul(self.page_size))
                .fold(0, u64::saturating_add),
            cgroup: self.cgroup.as_ref().map(cgroup::sample),
        })
    }
}
