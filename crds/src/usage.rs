//! The usage report: what a supervisor writes on its own pod and the operator folds into status.
//!
//! One annotation per container, `quickube.com/usage-<container>`, whose value is JSON such as
//! `{"cpuMillicores":250,"memoryBytes":73400320,"oomKills":0,"currentCpuMillicores":20,
//! "currentMemoryBytes":51200000,"reportedAt":1800000000}`: peaks since the container started, and the
//! values at the time of the report.

use serde::{Deserialize, Serialize};

use crate::names::ANNOTATION_USAGE;

/// Peak usage of one container since it started.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageReport {
    /// Highest CPU use over one sampling window, in thousandths of a core.
    pub cpu_millicores: u64,
    /// Highest memory use (the kernel's own peak where the cgroup exposes it).
    pub memory_bytes: u64,
    /// OOM kills seen in the container's cgroup.
    #[serde(default)]
    pub oom_kills: u32,
    /// CPU use over the last sampling window when the report was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_cpu_millicores: Option<u64>,
    /// Memory use when the report was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_memory_bytes: Option<u64>,
    /// When the report was written, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<i64>,
}

/// Why a usage annotation was ignored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("usage report is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("usage report is implausible: {0}")]
    Implausible(&'static str),
}

/// Sanity bounds: 4096 cores, 64 TiB. Anything above is a broken reporter, not a real peak.
const MAX_MILLICORES: u64 = 4096 * 1000;
const MAX_BYTES: u64 = 64 << 40;

impl UsageReport {
    /// Parses an annotation value; never panics, whatever the input.
    pub fn parse(text: &str) -> Result<Self, UsageError> {
        if text.len() > 4096 {
            return Err(UsageError::Malformed("longer than 4096 bytes".into()));
        }
        let report: UsageReport =
            serde_json::from_str(text).map_err(|e| UsageError::Malformed(e.to_string()))?;
        if report.cpu_millicores > MAX_MILLICORES {
            return Err(UsageError::Implausible("more than 4096 cores"));
        }
        if report.memory_bytes > MAX_BYTES {
            return Err(UsageError::Implausible("more than 64 TiB of memory"));
        }
        Ok(report)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The larger of each peak; the current values and time of `other`.
    pub fn max(self, other: UsageReport) -> UsageReport {
        UsageReport {
            cpu_millicores: self.cpu_millicores.max(other.cpu_millicores),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
            oom_kills: self.oom_kills.max(other.oom_kills),
            ..other
        }
    }
}

/// The annotation key of one container's report.
pub fn annotation_key(container: &str) -> String {
    format!("{ANNOTATION_USAGE}-{container}")
}

/// The container a usage annotation key belongs to, if it is one.
pub fn container_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(ANNOTATION_USAGE)?
        .strip_prefix('-')
        .filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let r = UsageReport {
            cpu_millicores: 250,
            memory_bytes: 73_400_320,
            oom_kills: 1,
            ..Default::default()
        };
        assert_eq!(UsageReport::parse(&r.to_json()), Ok(r));
        assert_eq!(
            r.to_json(),
            r#"{"cpuMillicores":250,"memoryBytes":73400320,"oomKills":1}"#
        );
    }

    #[test]
    fn malformed_and_implausible_reports_are_refused() {
        for bad in [
            "",
            "{",
            "[]",
            "null",
            r#"{"cpuMillicores":-1,"memoryBytes":1}"#,
            r#"{"cpuMillicores":"1","memoryBytes":1}"#,
            r#"{"memoryBytes":1}"#,
            r#"{"cpuMillicores":1,"memoryBytes":1,"extra":true}"#,
            r#"{"cpuMillicores":1.5,"memoryBytes":1}"#,
        ] {
            assert!(
                matches!(UsageReport::parse(bad), Err(UsageError::Malformed(_))),
                "{bad}"
            );
        }
        let huge = format!(
            r#"{{"cpuMillicores":{},"memoryBytes":1}}"#,
            MAX_MILLICORES + 1
        );
        assert_eq!(
            UsageReport::parse(&huge),
            Err(UsageError::Implausible("more than 4096 cores"))
        );
        assert!(UsageReport::parse(&"x".repeat(5000)).is_err());
    }

    #[test]
    fn keys_name_their_container() {
        assert_eq!(annotation_key("worker"), "quickube.com/usage-worker");
        assert_eq!(
            container_of_key("quickube.com/usage-worker"),
            Some("worker")
        );
        assert_eq!(container_of_key("quickube.com/usage-"), None);
        assert_eq!(container_of_key("quickube.com/usage"), None);
        assert_eq!(container_of_key("other/usage-worker"), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = UsageReport::parse(&s);
        }

        #[test]
        fn valid_reports_round_trip(c in 0..MAX_MILLICORES, m in 0..MAX_BYTES, o in any::<u32>()) {
            let r = UsageReport { cpu_millicores: c, memory_bytes: m, oom_kills: o, current_cpu_millicores: Some(c / 2), current_memory_bytes: None, reported_at: Some(1_800_000_000) };
            prop_assert_eq!(UsageReport::parse(&r.to_json()), Ok(r));
        }
    }
}
