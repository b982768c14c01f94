//! Taking a [`Reading`]: the supervisor's descendants from procfs and the cgroup, now.

use std::time::Instant;

use nix::unistd::SysconfVar;

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
            page_size: sysconf_or(SysconfVar::PAGE_SIZE, 4096),
            origin: Instant::now(),
        }
    }

    /// The unit of the CPU times in `/proc/<pid>/stat` (USER_HZ: 100 on every Linux we know of).
    pub fn ticks_per_sec() -> u64 {
        sysconf_or(SysconfVar::CLK_TCK, 100)
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

/// A positive `sysconf` value, else `default` (sysconf cannot fail for these on Linux; never panic).
fn sysconf_or(var: SysconfVar, default: u64) -> u64 {
    match nix::unistd::sysconf(var) {
        Ok(Some(v)) if v > 0 => v as u64,
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_and_clock_ticks_are_the_kernels() {
        // Against independent sources: the kernel's page size as the auxiliary vector has it, the
        // tick rate as getconf reports it.
        let page = std::fs::read("/proc/self/auxv").ok().and_then(|auxv| {
            auxv.chunks_exact(16).find_map(|kv| {
                let k = u64::from_ne_bytes(kv[..8].try_into().ok()?);
                let v = u64::from_ne_bytes(kv[8..].try_into().ok()?);
                (k == 6).then_some(v) // AT_PAGESZ
            })
        });
        assert_eq!(Some(sysconf_or(SysconfVar::PAGE_SIZE, 0)), page);
        let getconf = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap();
        let ticks: u64 = String::from_utf8_lossy(&getconf.stdout)
            .trim()
            .parse()
            .unwrap();
        assert_eq!(Sampler::ticks_per_sec(), ticks);
    }
}
