//! The process tree from procfs: who descends from us (to kill stragglers when not PID 1, and to
//! sample usage), parsed from `/proc/<pid>/stat`.

use std::collections::{HashMap, HashSet};

/// The fields of `/proc/<pid>/stat` the supervisor uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Start time in clock ticks after boot: with the pid, it names a process even across pid reuse.
    pub starttime: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
}

impl ProcStat {
    pub fn cpu_ticks(&self) -> u64 {
        self.utime.saturating_add(self.stime)
    }
}

/// Parses one `/proc/<pid>/stat` line. The command name sits in parentheses and may itself contain
/// spaces and parentheses, so the fields are counted from the last `)`. Never panics.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid: i32 = text[..open].trim().parse().ok()?;
    // Fields after the name, numbered from 3 (state) as in proc(5).
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    let state = field(3)?.chars().next()?;
    Some(ProcStat {
        pid,
        state,
        ppid: field(4)?.parse().ok()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
        starttime: field(22)?.parse().ok()?,
        rss_pages: field(24)?.parse::<i64>().ok()?.max(0) as u64,
    })
}

/// Every process visible in `/proc` that can be read now (processes vanish while we look).
pub fn snapshot() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|t| parse_stat(&t))
        .collect()
}

/// The descendants of `root` read directly from procfs: through the kernel's per-thread
/// `children` lists when the kernel has them (a few small reads instead of a scan of every
/// process), else by scanning `/proc`.
pub fn descendants_of(root: i32) -> Vec<ProcStat> {
    if !std::path::Path::new(&format!("/proc/{root}/task/{root}/children")).exists() {
        return descendants(&snapshot(), root);
    }
    let mut out = Vec::new();
    let mut seen = HashSet::from([root]);
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.filter_map(|t| t.ok()) {
            let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in text
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                if !seen.insert(child) {
                    continue;
                }
                if let Some(p) = std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .ok()
                    .and_then(|t| parse_stat(&t))
                {
                    out.push(p);
                    stack.push(child);
                }
            }
        }
    }
    out
}

/// The processes descending from `root` (not `root` itself), in no particular order.
pub fn descendants(all: &[ProcStat], root: i32) -> Vec<ProcStat> {
    let mut children: HashMap<i32, Vec<usize>> = HashMap::new();
    for (i, p) in all.iter().enumerate() {
        children.entry(p.ppid).or_default().push(i);
    }
    let mut out = Vec::new();
    let mut seen = HashSet::from([root]);
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for &i in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            let p = all[i];
            if seen.insert(p.pid) {
                out.push(p);
                stack.push(p.pid);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINE: &str = "1234 (my (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 25 7 0 0 20 0 1 0 5000 10000000 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";

    #[test]
    fn parses_a_real_shaped_line() {
        let p = parse_stat(LINE).unwrap();
        assert_eq!(
            p,
            ProcStat {
                pid: 1234,
                state: 'S',
                ppid: 1,
                utime: 25,
                stime: 7,
                starttime: 5000,
                rss_pages: 321
            }
        );
        assert_eq!(p.cpu_ticks(), 32);
    }

    #[test]
    fn parses_our_own_stat() {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        let p = parse_stat(&text).unwrap();
        assert_eq!(p.pid, std::process::id() as i32);
        assert!(p.rss_pages > 0);
    }

    #[test]
    fn refuses_broken_lines() {
        for bad in [
            "",
            "1234",
            "1234 (x",
            "x (y) S 1",
            "1 (a) S",
            ") 1 (",
            "1 (a) S x 1 1 0 -1 0 0 0 0 0 1 1 0 0 0 0 0 0 1 1 1",
        ] {
            assert_eq!(parse_stat(bad), None, "{bad}");
        }
    }

    fn p(pid: i32, ppid: i32) -> ProcStat {
        ProcStat {
            pid,
            state: 'S',
            ppid,
            utime: 0,
            stime: 0,
            starttime: 0,
            rss_pages: 0,
        }
    }

    #[test]
    fn descendants_follow_parents_transitively() {
        let all = [
            p(1, 0),
            p(10, 1),
            p(11, 10),
            p(12, 11),
            p(20, 1),
            p(30, 99),
            p(31, 30),
        ];
        let mut d: Vec<i32> = descendants(&all, 10).iter().map(|p| p.pid).collect();
        d.sort();
        assert_eq!(d, vec![11, 12]);
        let mut d: Vec<i32> = descendants(&all, 1).iter().map(|p| p.pid).collect();
        d.sort();
        assert_eq!(d, vec![10, 11, 12, 20]);
        assert!(descendants(&all, 12).is_empty());
    }

    #[test]
    fn children_lists_agree_with_a_full_scan() {
        let mut kids: Vec<std::process::Child> = (0..3)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("5")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let me = std::process::id() as i32;
        let mut fast: Vec<i32> = descendants_of(me).iter().map(|p| p.pid).collect();
        let mut full: Vec<i32> = descendants(&snapshot(), me).iter().map(|p| p.pid).collect();
        for k in &mut kids {
            k.kill().unwrap();
            k.wait().unwrap();
        }
        fast.sort();
        full.sort();
        for k in &kids {
            assert!(fast.contains(&(k.id() as i32)));
        }
        assert_eq!(fast, full);
    }

    #[test]
    fn a_cycle_does_not_loop() {
        let all = [p(2, 3), p(3, 2)];
        assert_eq!(descendants(&all, 2).len(), 1);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = parse_stat(&s);
        }

        #[test]
        fn names_with_any_text_parse(name in "[^\n]{0,30}", utime in any::<u32>()) {
            let line = format!("42 ({name}) R 7 0 0 0 -1 0 0 0 0 0 {utime} 3 0 0 20 0 1 0 99 0 5 0");
            let p = parse_stat(&line).unwrap();
            prop_assert_eq!((p.pid, p.ppid, p.utime, p.stime, p.starttime, p.rss_pages), (42, 7, utime as u64, 3, 99, 5));
        }
    }
}
