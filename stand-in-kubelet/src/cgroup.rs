//! Per-container cgroups: memory limit (OOM kill by the kernel), cpu quota, and accounting the
//! supervisor can read. cgroup v1 (memory, cpu, cpuacct hierarchies) or v2 (unified), whichever
//! the machine has. A container's cgroup is `qscaler/<pod-uid>/<container>` in each hierarchy.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which cgroup layout the machine has.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// Separate hierarchies per controller under `root` (e.g. /sys/fs/cgroup/memory).
    V1 { root: PathBuf },
    /// One unified hierarchy at `root`.
    V2 { root: PathBuf },
    /// No usable cgroup filesystem: limits are not enforced.
    None,
}

impl Layout {
    pub fn detect() -> Layout {
        let root = PathBuf::from("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            Layout::V2 { root }
        } else if root.join("memory/cgroup.procs").exists() {
            Layout::V1 { root }
        } else {
            Layout::None
        }
    }
}

/// Limits to apply, in bytes and millicores.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u64>,
}

/// The cgroup directories of one container.
#[derive(Debug, Clone)]
pub struct ContainerCgroup {
    v2: bool,
    /// Directories with their controller ("memory", "cpu", "cpuacct"; "" for the one v2 dir).
    dirs: Vec<(&'static str, PathBuf)>,
    /// `qscaler/<uid>` parents, removed when empty.
    parents: Vec<PathBuf>,
}

const CFS_PERIOD_US: u64 = 100_000;

impl ContainerCgroup {
    /// Create the container's cgroups and write its limits.
    pub fn create(
        layout: &Layout,
        pod_uid: &str,
        container: &str,
        limits: Limits,
    ) -> io::Result<Option<Self>> {
        let rel = Path::new("qscaler").join(pod_uid).join(container);
        match layout {
            Layout::None => Ok(None),
            Layout::V1 { root } => {
                let mut dirs = Vec::new();
                let mut parents = Vec::new();
                let mut seen = Vec::new();
                for ctrl in ["memory", "cpu", "cpuacct"] {
                    let base = root.join(ctrl);
                    // cpu and cpuacct are often one hierarchy ("cpu,cpuacct") with symlinks.
                    let canon = std::fs::canonicalize(&base).unwrap_or(base.clone());
                    if !base.join("cgroup.procs").exists() || seen.contains(&canon) {
                        continue;
                    }
                    seen.push(canon);
                    let dir = base.join(&rel);
                    std::fs::create_dir_all(&dir)?;
                    parents.push(base.join("qscaler").join(pod_uid));
                    dirs.push((ctrl, dir));
                }
                let cg = ContainerCgroup {
                    v2: false,
                    dirs,
                    parents,
                };
                if let Some(bytes) = limits.memory_bytes {
                    cg.write_in("memory", "memory.limit_in_bytes", &bytes.to_string())?;
                }
                if let Some(millis) = limits.cpu_millis {
                    let quota = (millis * CFS_PERIOD_US / 1000).max(1000);
                    cg.write_in("cpu", "cpu.cfs_period_us", &CFS_PERIOD_US.to_string())?;
                    cg.write_in("cpu", "cpu.cfs_quota_us", &quota.to_string())?;
                }
                Ok(Some(cg))
            }
            Layout::V2 { root } => {
                // Controllers must be enabled in every ancestor's subtree_control.
                let mut path = root.clone();
                for part in ["qscaler", pod_uid] {
                    let _ = std::fs::write(path.join("cgroup.subtree_control"), "+memory +cpu");
                    path = path.join(part);
                    std::fs::create_dir_all(&path)?;
                }
                let _ = std::fs::write(path.join("cgroup.subtree_control"), "+memory +cpu");
                let dir = root.join(&rel);
                std::fs::create_dir_all(&dir)?;
                if let Some(bytes) = limits.memory_bytes {
                    std::fs::write(dir.join("memory.max"), bytes.to_string())?;
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                }
                if let Some(millis) = limits.cpu_millis {
                    let quota = (millis * CFS_PERIOD_US / 1000).max(1000);
                    std::fs::write(dir.join("cpu.max"), format!("{quota} {CFS_PERIOD_US}"))?;
                }
                Ok(Some(ContainerCgroup {
                    v2: true,
                    dirs: vec![("", dir)],
                    parents: vec![root.join("qscaler").join(pod_uid)],
                }))
            }
        }
    }

    fn dir_of(&self, ctrl: &str) -> Option<&PathBuf> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == ctrl || c.is_empty())
            .map(|(_, d)| d)
    }

    fn write_in(&self, ctrl: &str, file: &str, value: &str) -> io::Result<()> {
        match self.dir_of(ctrl) {
            Some(dir) => std::fs::write(dir.join(file), value),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no {ctrl} cgroup hierarchy"),
            )),
        }
    }

    /// The `cgroup.procs` files a process must write its pid to, to join this cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(_, d)| d.join("cgroup.procs"))
            .collect()
    }

    /// Whether the kernel OOM-killed a process of this container.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        self.dir_of("memory")
            .and_then(|d| std::fs::read_to_string(d.join(file)).ok())
            .is_some_and(|text| counter(&text, key).unwrap_or(0) > 0)
    }

    /// Remove the directories once the container's processes are gone (retries briefly, since the
    /// last processes of a PID namespace can take a moment to be reaped).
    pub async fn remove(&self) {
        for (_, dir) in &self.dirs {
            for attempt in 0..50 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => {
                        if attempt == 49 {
                            tracing::warn!(dir = %dir.display(), error = %e, "could not remove cgroup");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        for parent in &self.parents {
            // Fails while another container of the pod still has its cgroup: fine.
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// The value of `key N` in a flat-keyed cgroup file (memory.oom_control, memory.events).
pub fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next())
            .flatten()
            .and_then(|v| v.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory tree that looks like a cgroup root (plain files stand in for the kernel's).
    fn fake_root(name: &str, controllers: &[&str]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("qscaler-cg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for c in controllers {
            let dir = if c.is_empty() {
                root.clone()
            } else {
                root.join(c)
            };
            std::fs::create_dir_all(&dir).expect("fake cgroup dir");
            std::fs::write(dir.join("cgroup.procs"), "").expect("fake cgroup.procs");
        }
        root
    }

    #[tokio::test]
    async fn v1_layout_limits_and_oom() {
        let root = fake_root("v1", &["memory", "cpu", "cpuacct"]);
        let layout = Layout::V1 { root: root.clone() };
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            cpu_millis: Some(500),
        };
        let cg = ContainerCgroup::create(&layout, "uid-1", "main", limits)
            .expect("create")
            .expect("a cgroup");
        let dir = |c: &str| root.join(c).join("qscaler/uid-1/main");
        assert_eq!(
            cg.procs_files(),
            ["memory", "cpu", "cpuacct"].map(|c| dir(c).join("cgroup.procs"))
        );
        let read = |p: PathBuf| std::fs::read_to_string(p).expect("written");
        assert_eq!(
            read(dir("memory").join("memory.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(read(dir("cpu").join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(dir("cpu").join("cpu.cfs_period_us")), "100000");
        assert!(!cg.oom_killed());
        std::fs::write(
            dir("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .expect("fake oom_control");
        assert!(cg.oom_killed());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn v2_layout_limits_and_oom() {
        let root = fake_root("v2", &[""]);
        let layout = Layout::V2 { root: root.clone() };
        let limits = Limits {
            memory_bytes: Some(1 << 30),
            cpu_millis: Some(2000),
        };
        let cg = ContainerCgroup::create(&layout, "uid-2", "main", limits)
            .expect("create")
            .expect("a cgroup");
        let dir = root.join("qscaler/uid-2/main");
        assert_eq!(cg.procs_files(), [dir.join("cgroup.procs")]);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("written");
        assert_eq!(read("memory.max"), "1073741824");
        assert_eq!(read("cpu.max"), "200000 100000");
        let enabled = std::fs::read_to_string(root.join("qscaler/cgroup.subtree_control"))
            .expect("controllers enabled for children");
        assert_eq!(enabled, "+memory +cpu");
        assert!(!cg.oom_killed());
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .expect("fake memory.events");
        assert!(cg.oom_killed());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn no_cgroups_no_limits() {
        let cg = ContainerCgroup::create(&Layout::None, "u", "c", Limits::default()).expect("ok");
        assert!(cg.is_none());
    }

    #[test]
    fn counters_of_flat_keyed_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(counter(v1, "oom_kill"), Some(2));
        assert_eq!(counter(v1, "under_oom"), Some(0));
        let v2 = "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(counter(v2, "oom_kill"), Some(1));
        assert_eq!(counter(v2, "missing"), None);
    }
}
