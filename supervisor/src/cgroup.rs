//! The container's cgroup, v1 or v2: the kernel's own memory peak (which sampling can miss), CPU
//! time of everything in the container, and OOM kills.
//!
//! Found through `/proc/self/cgroup` (where we are in each hierarchy) mapped through
//! `/proc/self/mountinfo` (which part of each hierarchy is mounted where). Joining the paths of
//! `/proc/self/cgroup` onto `/sys/fs/cgroup/<controller>` is not enough: under Docker on cgroup v1
//! without a cgroup namespace, `/proc/self/cgroup` names `/kubepods/.../<id>` while
//! `/sys/fs/cgroup/memory` in the container already *is* that cgroup (its mount root, mountinfo's
//! 4th field, is `/kubepods/.../<id>`). A mount with root R at M shows cgroup P (P under R) at
//! M + (P − R).
//!
//! A membership path of `/` is used only inside a cgroup namespace (a container), where `/` is the
//! container's own cgroup. Outside one it is the host's root cgroup, whose numbers describe the whole
//! machine. Mountinfo cannot change that: the only mount that shows `/` is one whose root is `/`,
//! which is the whole hierarchy, the host's root included. (Docker without a namespace gives a
//! container a non-root path, so it never needs the exception.)

use std::path::{Component, Path, PathBuf};

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

/// A cgroup filesystem mount from `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The cgroup shown at the mount point (relative to our cgroup namespace's root).
    pub root: String,
    pub mount_point: PathBuf,
    /// Version 2 (`cgroup2`) or version 1 (`cgroup`).
    pub v2: bool,
    /// The super options; for v1 they name the hierarchy's controllers (`rw,cpu,cpuacct`).
    pub options: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the cgroup mounts (`cgroup` and `cgroup2`) of `/proc/self/mountinfo`, skipping other
/// and malformed lines. Never panics.
///
/// A line: `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let mut head = head.split(' ');
            let root = head.nth(3)?;
            let mount_point = head.next()?;
            let mut tail = tail.split(' ');
            let v2 = match tail.next()? {
                "cgroup" => false,
                "cgroup2" => true,
                _ => return None,
            };
            let options = tail
                .nth(1)
                .unwrap_or("")
                .split(',')
                .map(str::to_owned)
                .collect();
            Some(Mount {
                root: unescape(root),
                mount_point: PathBuf::from(unescape(mount_point)),
                v2,
                options,
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

/// The directory where `mount` shows cgroup `path`, if `path` is `mount.root` or below it. Paths
/// with `..` (a cgroup outside our namespace's root) are never mapped.
fn through(mount: &Mount, path: &str) -> Option<PathBuf> {
    if Path::new(path)
        .components()
        .chain(Path::new(&mount.root).components())
        .any(|c| c == Component::ParentDir)
    {
        return None;
    }
    let rest = if mount.root == "/" {
        path
    } else {
        path.strip_prefix(mount.root.trim_end_matches('/'))?
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        // `/kubepods/pod1` is not below `/kubepods/pod`.
        return None;
    }
    let rel = rest.trim_start_matches('/');
    Some(if rel.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rel)
    })
}

/// Decides where to read, given `/proc/self/cgroup`, the cgroup mounts of `/proc/self/mountinfo`,
/// whether we are in a cgroup namespace, and a predicate telling which paths exist. Pure, for tests.
///
/// With v1 hierarchies (v1 alone, or hybrid: v1 controllers beside a cgroup2 mount that holds none)
/// the v1 `memory` and `cpuacct` hierarchies are read; otherwise the v2 one, if it has
/// `memory.current`.
pub fn locate(
    memberships: &[Membership],
    mounts: &[Mount],
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
        mounts
            .iter()
            .filter(|mount| !mount.v2 && mount.options.iter().any(|o| o == controller))
            .filter_map(|mount| through(mount, &m.path))
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
    mounts
        .iter()
        .filter(|mount| mount.v2)
        .filter_map(|mount| through(mount, &m.path))
        .find(|d| exists(&d.join("memory.current")))
        .map(Location::V2)
}

/// Finds the container's cgroup on this machine. `Err` says why there is none, for the log.
pub fn discover() -> Result<Location, String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let in_ns = std::fs::metadata("/proc/self/ns/cgroup")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m) != INIT_CGROUP_NS_INO)
        .unwrap_or(false);
    let memberships = parse_proc_cgroup(&cgroup);
    let mounts = parse_mountinfo(&mountinfo);
    locate(&memberships, &mounts, in_ns, |p| p.exists()).ok_or_else(|| {
        let ours: Vec<String> = memberships
            .iter()
            .filter(|m| {
                m.hierarchy == 0
                    || m.controllers
                        .iter()
                        .any(|c| c == "memory" || c == "cpuacct")
            })
            .map(|m| format!("{}:{}:{}", m.hierarchy, m.controllers.join(","), m.path))
            .collect();
        let shown: Vec<String> = mounts
            .iter()
            .map(|m| format!("{} at {}", m.root, m.mount_point.display()))
            .collect();
        format!(
            "memberships [{}], cgroup mounts [{}], {} cgroup namespace",
            ours.join(" "),
            shown.join(", "),
            if in_ns { "in a" } else { "no" }
        )
    })
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

    // Real-looking texts, one pair per machine kind. `$ID` is a container id, `$POD` a pod uid.
    const ID: &str = "5e6f0d3c9a7b41f2a8c4d1e0b9f7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9";
    const POD: &str = "pod6b1a2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d";

    /// A container under Docker 20.10 on cgroup v1 without a cgroup namespace (the kubelet's
    /// dockershim, cgroupfs driver, on a hybrid host like the project's machines): the kernel names
    /// the host path, and each hierarchy is mounted with that path as its root.
    const DOCKER_V1_CGROUP: &str = "\
12:pids:/kubepods/burstable/$POD/$ID
11:hugetlb:/kubepods/burstable/$POD/$ID
9:name=systemd:/kubepods/burstable/$POD/$ID
8:blkio:/kubepods/burstable/$POD/$ID
5:devices:/kubepods/burstable/$POD/$ID
4:memory:/kubepods/burstable/$POD/$ID
3:cpuset:/kubepods/burstable/$POD/$ID
2:cpuacct:/kubepods/burstable/$POD/$ID
1:cpu:/kubepods/burstable/$POD/$ID
0::/
";
    const DOCKER_V1_MOUNTINFO: &str = "\
1297 1278 0:61 / / rw,relatime master:633 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/lib/docker/overlay2/1f/diff,workdir=/var/lib/docker/overlay2/1f/work
1298 1297 0:64 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1300 1297 0:66 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1301 1300 0:67 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
1302 1301 0:29 /kubepods/burstable/$POD/$ID /sys/fs/cgroup/systemd ro,nosuid,nodev,noexec,relatime master:11 - cgroup cgroup rw,xattr,name=systemd
1303 1301 0:32 /kubepods/burstable/$POD/$ID /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:16 - cgroup cgroup rw,memory
1304 1301 0:30 /kubepods/burstable/$POD/$ID /sys/fs/cgroup/cpuacct ro,nosuid,nodev,noexec,relatime master:14 - cgroup cgroup rw,cpuacct
1305 1301 0:29 /kubepods/burstable/$POD/$ID /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec,relatime master:13 - cgroup cgroup rw,cpu
1306 1301 0:33 /kubepods/burstable/$POD/$ID /sys/fs/cgroup/cpuset ro,nosuid,nodev,noexec,relatime master:15 - cgroup cgroup rw,cpuset
1307 1301 0:35 /kubepods/burstable/$POD/$ID /sys/fs/cgroup/pids ro,nosuid,nodev,noexec,relatime master:20 - cgroup cgroup rw,pids
1310 1297 8:1 /var/lib/kubelet/pods/$POD/etc-hosts /etc/hosts rw,relatime - ext4 /dev/sda1 rw
";

    /// The same container with a private cgroup namespace (`--cgroupns=private`): paths are `/`.
    const DOCKER_V1_NS_CGROUP: &str = "\
12:pids:/
9:name=systemd:/
4:memory:/
3:cpu,cpuacct:/
0::/
";
    const DOCKER_V1_NS_MOUNTINFO: &str = "\
1401 1400 0:70 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
1402 1401 0:29 / /sys/fs/cgroup/systemd ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,xattr,name=systemd
1403 1401 0:32 / /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
1404 1401 0:30 / /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu,cpuacct
1405 1401 0:35 / /sys/fs/cgroup/pids ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
";

    /// A v1 host (this project's machines: hybrid, cpu and cpuacct apart, an empty cgroup2 at
    /// unified) and a process the stand-in kubelet put in `qscaler/<uid>/<container>`.
    const HOST_HYBRID_MOUNTINFO: &str = "\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const STAND_IN_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/qscaler/0b6d/main
3:cpuset:/
2:cpuacct:/qscaler/0b6d/main
1:cpu:/qscaler/0b6d/main
0::/
";
    /// A process of this machine's sandbox: its own memory cgroup, every other hierarchy at the root.
    const HOST_PROCESS_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/b92cbe3d8077561918d6c77852d99fdc
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";
    /// A host shell at the root of every hierarchy.
    const HOST_ROOT_CGROUP: &str = "4:memory:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    /// Docker systemd-driver style: cpu and cpuacct joined, mounted at `cpu,cpuacct`.
    const JOINED_CGROUP: &str = "4:memory:/docker/$ID\n3:cpu,cpuacct:/docker/$ID\n";
    const JOINED_MOUNTINFO: &str = "\
701 700 0:32 /docker/$ID /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:16 - cgroup cgroup rw,memory
702 700 0:30 /docker/$ID /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime master:14 - cgroup cgroup rw,cpu,cpuacct
";

    /// cgroup v2 under containerd (a cgroup namespace: `0::/`, mounted with root `/`).
    const V2_NS_CGROUP: &str = "0::/\n";
    const V2_NS_MOUNTINFO: &str = "\
612 604 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate,memory_recursiveprot
";
    /// cgroup v2 under Docker with `--cgroupns=host`: the host path, mounted with it as root.
    const V2_DOCKER_HOST_NS_CGROUP: &str = "0::/system.slice/docker-$ID.scope\n";
    const V2_DOCKER_HOST_NS_MOUNTINFO: &str = "\
812 804 0:27 /system.slice/docker-$ID.scope /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate,memory_recursiveprot
";
    /// A v2 host: a process in a session scope, the whole hierarchy at /sys/fs/cgroup.
    const V2_HOST_CGROUP: &str = "0::/user.slice/user-0.slice/session-3.scope\n";
    const V2_HOST_MOUNTINFO: &str = "\
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    /// In a cgroup namespace whose /sys/fs/cgroup was bind-mounted from the host: the mount's root
    /// lies outside the namespace (`/..`), so it does not show our cgroup.
    const V2_FOREIGN_MOUNTINFO: &str = "\
912 904 0:27 /../../.. /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    fn fill(text: &str) -> String {
        text.replace("$POD", POD).replace("$ID", ID)
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(fill(s))
    }

    struct Case {
        name: &'static str,
        cgroup: &'static str,
        mountinfo: &'static str,
        in_ns: bool,
        /// Directories (v1) or `memory.current` files (v2) that exist in that mount namespace.
        existing: &'static [&'static str],
        want: Option<Location>,
    }

    fn cases() -> Vec<Case> {
        let v1 = |memory: Option<&str>, cpuacct: Option<&str>| {
            Some(Location::V1 {
                memory: memory.map(p),
                cpuacct: cpuacct.map(p),
            })
        };
        vec![
            Case {
                // A Docker container on a cgroup v1 host: the path /proc/self/cgroup names
                // (/sys/fs/cgroup/memory/kubepods/...) does not exist inside it.
                name: "docker v1 without a cgroup namespace",
                cgroup: DOCKER_V1_CGROUP,
                mountinfo: DOCKER_V1_MOUNTINFO,
                in_ns: false,
                existing: &["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpuacct"],
                want: v1(
                    Some("/sys/fs/cgroup/memory"),
                    Some("/sys/fs/cgroup/cpuacct"),
                ),
            },
            Case {
                name: "docker v1 with a cgroup namespace",
                cgroup: DOCKER_V1_NS_CGROUP,
                mountinfo: DOCKER_V1_NS_MOUNTINFO,
                in_ns: true,
                existing: &["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu,cpuacct"],
                want: v1(
                    Some("/sys/fs/cgroup/memory"),
                    Some("/sys/fs/cgroup/cpu,cpuacct"),
                ),
            },
            Case {
                // The same texts with no namespace would mean the host root: never used.
                name: "root paths outside a cgroup namespace",
                cgroup: DOCKER_V1_NS_CGROUP,
                mountinfo: DOCKER_V1_NS_MOUNTINFO,
                in_ns: false,
                existing: &["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu,cpuacct"],
                want: None,
            },
            Case {
                name: "v1 host, a process of the stand-in kubelet",
                cgroup: STAND_IN_CGROUP,
                mountinfo: HOST_HYBRID_MOUNTINFO,
                in_ns: false,
                existing: &[
                    "/sys/fs/cgroup/memory/qscaler/0b6d/main",
                    "/sys/fs/cgroup/cpuacct/qscaler/0b6d/main",
                    "/sys/fs/cgroup/unified/memory.current",
                ],
                want: v1(
                    Some("/sys/fs/cgroup/memory/qscaler/0b6d/main"),
                    Some("/sys/fs/cgroup/cpuacct/qscaler/0b6d/main"),
                ),
            },
            Case {
                // Hybrid: v1 memory wins over the cgroup2 at unified; cpuacct at `/` is the host's.
                name: "hybrid host, own memory cgroup only",
                cgroup: HOST_PROCESS_CGROUP,
                mountinfo: HOST_HYBRID_MOUNTINFO,
                in_ns: false,
                existing: &[
                    "/sys/fs/cgroup/memory/process_api/b92cbe3d8077561918d6c77852d99fdc",
                    "/sys/fs/cgroup/cpuacct",
                    "/sys/fs/cgroup/unified/memory.current",
                ],
                want: v1(
                    Some("/sys/fs/cgroup/memory/process_api/b92cbe3d8077561918d6c77852d99fdc"),
                    None,
                ),
            },
            Case {
                name: "hybrid host, root of every hierarchy",
                cgroup: HOST_ROOT_CGROUP,
                mountinfo: HOST_HYBRID_MOUNTINFO,
                in_ns: false,
                existing: &[
                    "/sys/fs/cgroup/memory",
                    "/sys/fs/cgroup/cpuacct",
                    "/sys/fs/cgroup/unified/memory.current",
                ],
                want: None,
            },
            Case {
                name: "v1 with cpu and cpuacct joined",
                cgroup: JOINED_CGROUP,
                mountinfo: JOINED_MOUNTINFO,
                in_ns: false,
                existing: &["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu,cpuacct"],
                want: v1(
                    Some("/sys/fs/cgroup/memory"),
                    Some("/sys/fs/cgroup/cpu,cpuacct"),
                ),
            },
            Case {
                name: "v1 mount missing for a controller",
                cgroup: DOCKER_V1_CGROUP,
                mountinfo: JOINED_MOUNTINFO,
                in_ns: false,
                existing: &["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu,cpuacct"],
                want: None,
            },
            Case {
                name: "v2 with a cgroup namespace",
                cgroup: V2_NS_CGROUP,
                mountinfo: V2_NS_MOUNTINFO,
                in_ns: true,
                existing: &["/sys/fs/cgroup/memory.current"],
                want: Some(Location::V2(p("/sys/fs/cgroup"))),
            },
            Case {
                name: "v2 root outside a cgroup namespace",
                cgroup: V2_NS_CGROUP,
                mountinfo: V2_NS_MOUNTINFO,
                in_ns: false,
                existing: &["/sys/fs/cgroup/memory.current"],
                want: None,
            },
            Case {
                name: "v2 docker without a cgroup namespace",
                cgroup: V2_DOCKER_HOST_NS_CGROUP,
                mountinfo: V2_DOCKER_HOST_NS_MOUNTINFO,
                in_ns: false,
                existing: &["/sys/fs/cgroup/memory.current"],
                want: Some(Location::V2(p("/sys/fs/cgroup"))),
            },
            Case {
                name: "v2 host process",
                cgroup: V2_HOST_CGROUP,
                mountinfo: V2_HOST_MOUNTINFO,
                in_ns: false,
                existing: &[
                    "/sys/fs/cgroup/user.slice/user-0.slice/session-3.scope/memory.current",
                ],
                want: Some(Location::V2(p(
                    "/sys/fs/cgroup/user.slice/user-0.slice/session-3.scope",
                ))),
            },
            Case {
                name: "v2 without memory.current",
                cgroup: V2_HOST_CGROUP,
                mountinfo: V2_HOST_MOUNTINFO,
                in_ns: false,
                existing: &[],
                want: None,
            },
            Case {
                name: "v2 mount from outside our cgroup namespace",
                cgroup: V2_NS_CGROUP,
                mountinfo: V2_FOREIGN_MOUNTINFO,
                in_ns: true,
                existing: &["/sys/fs/cgroup/memory.current"],
                want: None,
            },
            Case {
                name: "no cgroup mounts",
                cgroup: DOCKER_V1_CGROUP,
                mountinfo: "",
                in_ns: false,
                existing: &["/sys/fs/cgroup/memory"],
                want: None,
            },
        ]
    }

    #[test]
    fn locates_the_cgroup_of_each_kind_of_machine() {
        for c in cases() {
            let existing: Vec<PathBuf> = c.existing.iter().map(|e| p(e)).collect();
            let got = locate(
                &parse_proc_cgroup(&fill(c.cgroup)),
                &parse_mountinfo(&fill(c.mountinfo)),
                c.in_ns,
                |d| existing.iter().any(|e| e == d),
            );
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn parses_cgroup_mounts() {
        let m = parse_mountinfo(&fill(DOCKER_V1_MOUNTINFO));
        assert_eq!(m.len(), 6, "{m:?}");
        assert_eq!(
            m[1],
            Mount {
                root: fill("/kubepods/burstable/$POD/$ID"),
                mount_point: "/sys/fs/cgroup/memory".into(),
                v2: false,
                options: vec!["rw".into(), "memory".into()],
            }
        );
        let h = parse_mountinfo(HOST_HYBRID_MOUNTINFO);
        assert_eq!(h.len(), 10);
        assert!(h[9].v2 && h[9].mount_point == Path::new("/sys/fs/cgroup/unified"));
        // Octal escapes, as the kernel writes a space in a path.
        let e = parse_mountinfo("1 2 0:3 /a\\040b /mnt/c\\134d rw - cgroup2 none rw\n");
        assert_eq!(e[0].root, "/a b");
        assert_eq!(e[0].mount_point, Path::new("/mnt/c\\d"));
        assert!(parse_mountinfo("garbage\n1 2 3\n - cgroup\n").is_empty());
    }

    #[test]
    fn maps_only_paths_below_the_mount_root() {
        let mount = |root: &str| Mount {
            root: root.into(),
            mount_point: "/m".into(),
            v2: true,
            options: vec![],
        };
        assert_eq!(through(&mount("/"), "/"), Some("/m".into()));
        assert_eq!(through(&mount("/"), "/a/b"), Some("/m/a/b".into()));
        assert_eq!(through(&mount("/a"), "/a"), Some("/m".into()));
        assert_eq!(through(&mount("/a"), "/a/b"), Some("/m/b".into()));
        assert_eq!(through(&mount("/a"), "/ab"), None);
        assert_eq!(through(&mount("/a/b"), "/a"), None);
        assert_eq!(through(&mount("/"), "/../x"), None);
        assert_eq!(through(&mount("/.."), "/"), None);
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
            let _ = parse_mountinfo(&s);
            let _ = keyed_value(&s, &k);
            let _ = single_value(&s);
        }
    }
}
