//! The image table: container image → local executable, and Docker's rules for `command`/`args`.

use std::path::Path;

use serde::Deserialize;

/// The parsed `stand-in-kubelet/images.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ImageTable {
    #[serde(default, rename = "image")]
    pub images: Vec<ImageEntry>,
}

/// One image: what its ENTRYPOINT and CMD would be.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ImageEntry {
    pub image: String,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageTableError {
    #[error("reading the image table {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the image table {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
}

impl ImageTable {
    pub fn load(path: &Path) -> Result<Self, ImageTableError> {
        let text = std::fs::read_to_string(path).map_err(|source| ImageTableError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ImageTableError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The entry for `image`, if the table has one.
    pub fn lookup(&self, image: &str) -> Option<&ImageEntry> {
        let repo = repository(image);
        self.images
            .iter()
            .find(|e| repo == e.image || repo.ends_with(&format!("/{}", e.image)))
    }

    /// The argv a container runs, by Docker's rules; `None` when it would be empty.
    pub fn argv(&self, image: &str, command: &[String], args: &[String]) -> Option<Vec<String>> {
        let (entrypoint, cmd) = match self.lookup(image) {
            Some(e) => (e.entrypoint.as_slice(), e.cmd.as_slice()),
            None => (&[][..], &[][..]),
        };
        let argv = docker_argv(entrypoint, cmd, command, args);
        (!argv.is_empty()).then_some(argv)
    }
}

/// Docker's rules: `command` replaces the entrypoint and drops the image's CMD; `args` replace CMD.
pub fn docker_argv(
    entrypoint: &[String],
    cmd: &[String],
    command: &[String],
    args: &[String],
) -> Vec<String> {
    let head = if command.is_empty() {
        entrypoint
    } else {
        command
    };
    let tail = if !args.is_empty() {
        args
    } else if command.is_empty() {
        cmd
    } else {
        &[]
    };
    head.iter().chain(tail).cloned().collect()
}

/// The repository part of an image reference: without `@digest` and without `:tag`.
pub fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(colon) if !no_digest[colon..].contains('/') => &no_digest[..colon],
        _ => no_digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn repository_strips_tag_and_digest_but_not_a_registry_port() {
        assert_eq!(repository("qscaler/qsupervisor"), "qscaler/qsupervisor");
        assert_eq!(repository("qscaler/qsupervisor:0.1"), "qscaler/qsupervisor");
        assert_eq!(repository("busybox@sha256:abc"), "busybox");
        assert_eq!(repository("reg:5000/busybox"), "reg:5000/busybox");
        assert_eq!(repository("reg:5000/busybox:1.36"), "reg:5000/busybox");
    }

    #[test]
    fn docker_rules_for_command_and_args() {
        let ep = s(&["ep"]);
        let cmd = s(&["default"]);
        assert_eq!(docker_argv(&ep, &cmd, &[], &[]), s(&["ep", "default"]));
        assert_eq!(docker_argv(&ep, &cmd, &[], &s(&["a"])), s(&["ep", "a"]));
        assert_eq!(docker_argv(&ep, &cmd, &s(&["c"]), &[]), s(&["c"]));
        assert_eq!(
            docker_argv(&ep, &cmd, &s(&["c"]), &s(&["a"])),
            s(&["c", "a"])
        );
        assert!(docker_argv(&[], &[], &[], &[]).is_empty());
    }

    #[test]
    fn the_shipped_table_parses_and_maps_workspace_images() {
        let table = ImageTable::parse(include_str!("../images.toml")).expect("images.toml parses");
        assert_eq!(
            table.argv("qscaler/qsupervisor:latest", &[], &s(&["--", "w"])),
            Some(s(&["qsupervisor", "--", "w"]))
        );
        assert_eq!(
            table.argv("ghcr.io/quickube/qscaler/operator:0.1", &[], &[]),
            Some(s(&["qscaler-operator"]))
        );
        assert_eq!(
            table.argv("debian:12", &s(&["sh", "-c", "exit 3"]), &[]),
            Some(s(&["sh", "-c", "exit 3"]))
        );
        assert_eq!(table.argv("busybox", &[], &[]), Some(s(&["sh"])));
        assert_eq!(table.argv("debian", &[], &[]), None);
    }
}
