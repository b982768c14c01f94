//! The container's cgroup, v1 or v2: the kernel's own memory peak (which sampling can miss), CPU
//! time of everything in the container, and OOM kills.
//!
//! Found through `/proc/self/cgroup`. A controller whose path there is `/` is used only inside a
//! cgroup namespace (a container), where `/` is the container's own cgroup; outside one it is the
//! host's root cgroup, whose numbers would describe the whole machine.

use std::path::{Path, PathBuf};

/// The inode of the initial cgroup namespace (`PROC_CGROUP_INIT_INO` in the kernel).
const INIT_CGROUP_NS_INO: u64 = 0xEFFF_FFFB;

/// One line of `/proc/self/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub hierarchy: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses `/proc/self/cgroup`, skipping malformed lines. Never panics.
pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            let path = parts.next()?;
            path.starts_with('/').then(|| Membership {
                hierarchy,
                controllers,
                path: path.to_owned(),
            })
        })
        .collect()
}

/// Where the files of the container's cgroup are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    V1 {
        memory: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
    },
    V2(PathBuf),
}

/// Decides where to read, given `/proc/self/cgroup`, the cgroup mount root, whether we are in a
/// cgroup namespace, and a predicate telling which directories exist. Pure, for tests.
pub fn locate(
    memberships: &[Membership],
    root: &Path,
    in_cgroup_ns: bool,
    exists: impl Fn(&Path) -> bool,
) -> Option<Location> {
    let usable = |path: &str| in_cgroup_ns || path != "/";
    let v1_dir = |controller: &str| -> Option<PathBuf> {
        let m = memberships
            .iter()
            .find(|m| m.hierarchy != 0 && m.controllers.iter().any(|c| c == controller))?;
        if !usable(&m.path) {
            return None;
        }
        let rel = m.path.trim_start_matches('/');
        [m.controllers.join(","), controller.to_owned()]
            .into_iter()
            .map(|mount| root.join(mount).join(rel))
            .find(|d| exists(d))
    };
    let has_v1 = memberships.iter().any(|m| m.hierarchy != 0);
    if has_v1 {
        let memory = v1_dir("memory");
        let cpuacct = v1_dir("cpuacct");
        return (memory.is_some() || cpuacct.is_some()).then_some(Location::V1 { memory, cpuacct });
    }
    let m = memberships.iter().find(|m| m.hierarchy == 0)?;
    if !usable(&m.path) {
        return None;
    }
    let dir = root.join(m.path.trim_start_matches('/'));
    exists(&dir.join("memory.current")).then_some(Location::V2(dir))
}

/// Finds the container's cgroup on this machine.
pub fn discover() -> Option<Location> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let in_ns = std::fs::metadata("/proc/self/ns/cgroup")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m) != INIT_CGROUP_NS_INO)
        .unwrap_or(false);
    locate(
        &parse_proc_cgroup(&text),
        Path::new("/sys/fs/cgroup"),
        in_ns,
        |p| p.exists(),
    )
}

/// What one reading of the cgroup gives. Missing files leave fields `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupSample {
    pub memory_current: Option<u64>,
    /// The kernel's own high-water mark (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    pub memory_peak: Option<u64>,
    /// Total CPU time of the cgroup in nanoseconds.
    pub cpu_ns: Option<u64>,
    pub oom_kills: Option<u32>,
}

/// Value of `key` in a flat-keyed file such as `memory.events`, `cpu.stat` or `memory.oom_control`.
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then_some(())?;
        it.next()?.parse().ok()
    })
}

/// A file holding one number.
pub fn single_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// Reads the cgroup now.
pub fn sample(loc: &Location) -> CgroupSample {
    match loc {
        Location::V1 { memory, cpuacct } => {
            let mem = |f| memory.as_deref().and_then(|d| read(d, f));
            CgroupSample {
                memory_current: mem("memory.usage_in_bytes").and_then(|t| single_value(&t)),
                memory_peak: mem("memory.max_usage_in_bytes").and_then(|t| single_value(&t)),
                cpu_ns: cpuacct
                    .as_deref()
                    .and_then(|d| read(d, "cpuacct.usage"))
                    .and_then(|t| single_value(&t)),
                oom_kills: mem("memory.oom_control")
                    .and_then(|t| keyed_value(&t, "oom_kill"))
                    .map(|n| n.min(u32::MAX as u64) as u32),
            }
        }
        Location::V2(dir) => CgroupSample {
            memory_current: read(dir, "memory.current").and_then(|t| single_value(&t)),
            memory_peak: read(dir, "memory.peak").and_then(|t| single_value(&t)),
            cpu_ns: read(dir, "cpu.stat")
                .and_then(|t| keyed_value(&t, "usage_usec"))
                .map(|us| us.saturating_mul(1000)),
            oom_kills: read(dir, "memory.events")
                .and_then(|t| keyed_value(&t, "oom_kill"))
                .map(|n| n.min(u32::MAX as u64) as u32),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HYBRID: &str =
        "9:name=systemd:/\n4:memory:/pods/p1\n2:cpu,cpuacct:/pods/p1\n1:cpu:/\n0::/\n";

    #[test]
    fn parses_lines() {
        let m = parse_proc_cgroup(HYBRID);
        assert_eq!(m.len(), 5);
        assert_eq!(
            m[1],
            Membership {
                hierarchy: 4,
                controllers: vec!["memory".into()],
                path: "/pods/p1".into()
            }
        );
        assert_eq!(
            m[2].controllers,
            vec!["cpu".to_string(), "cpuacct".to_string()]
        );
        assert_eq!(
            m[4],
            Membership {
                hierarchy: 0,
                controllers: vec![],
                path: "/".into()
            }
        );
        assert!(parse_proc_cgroup("garbage\n1:x\nx:y:/z\n").is_empty());
    }

    #[test]
    fn v1_uses_joined_or_single_mounts() {
        let m = parse_proc_cgroup(HYBRID);
        let root = Path::new("/sys/fs/cgroup");
        let loc = locate(&m, root, false, |p| {
            p == Path::new("/sys/fs/cgroup/memory/pods/p1")
                || p == Path::new("/sys/fs/cgroup/cpuacct/pods/p1")
        });
        assert_eq!(
            loc,
            Some(Location::V1 {
                memory: Some("/sys/fs/cgroup/memory/pods/p1".into()),
                cpuacct: Some("/sys/fs/cgroup/cpuacct/pods/p1".into()),
            })
        );
    }

    #[test]
    fn root_paths_only_inside_a_cgroup_namespace() {
        let m = parse_proc_cgroup("4:memory:/\n3:cpuacct:/\n");
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(locate(&m, root, false, |_| true), None);
        assert_eq!(
            locate(&m, root, true, |_| true),
            Some(Location::V1 {
                memory: Some("/sys/fs/cgroup/memory".into()),
                cpuacct: Some("/sys/fs/cgroup/cpuacct".into())
            })
        );
        let v2 = parse_proc_cgroup("0::/\n");
        assert_eq!(locate(&v2, root, false, |_| true), None);
        assert_eq!(
            locate(&v2, root, true, |_| true),
            Some(Location::V2("/sys/fs/cgroup".into()))
        );
    }

    #[test]
    fn v2_needs_memory_current() {
        let m = parse_proc_cgroup("0::/kubepods/pod1/c1\n");
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(locate(&m, root, false, |_| false), None);
        assert_eq!(
            locate(&m, root, false, |_| true),
            Some(Location::V2("/sys/fs/cgroup/kubepods/pod1/c1".into()))
        );
    }

    #[test]
    fn keyed_files() {
        let events = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(keyed_value(events, "oom_kill"), Some(2));
        assert_eq!(keyed_value(events, "oom"), Some(1));
        assert_eq!(
            keyed_value("usage_usec 1500\nuser_usec 1000\n", "usage_usec"),
            Some(1500)
        );
        assert_eq!(
            keyed_value("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
        assert_eq!(keyed_value("", "x"), None);
        assert_eq!(keyed_value("x y", "x"), None);
        assert_eq!(single_value("123\n"), Some(123));
        assert_eq!(single_value("max\n"), None);
    }

    #[test]
    fn v2_sample_from_files() {
        let dir = std::env::temp_dir().join(format!("qsup-cg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.current"), "1000\n").unwrap();
        std::fs::write(dir.join("memory.peak"), "5000\n").unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 7\nuser_usec 5\n").unwrap();
        std::fs::write(dir.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        let s = sample(&Location::V2(dir.clone()));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            s,
            CgroupSample {
                memory_current: Some(1000),
                memory_peak: Some(5000),
                cpu_ns: Some(7000),
                oom_kills: Some(1)
            }
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "(.|\n){0,200}", k in "[a-z_]{0,10}") {
            let _ = parse_proc_cgroup(&s);
            let _ = keyed_value(&s, &k);
            let _ = single_value(&s);
        }
    }
}
