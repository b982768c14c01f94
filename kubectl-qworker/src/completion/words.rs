//! What the word under the cursor can be, from the words typed before it, read against the
//! command line's own definition (so new subcommands and flags complete without a change here).
//!
//! The answer is in the format of cobra's `__complete`, which kubectl relays for plugins: one
//! candidate a line (`VALUE\tDESCRIPTION`), then `:DIRECTIVE`.

use clap::builder::ValueHint;
use clap::{Arg, ArgAction, Command};

use crate::cli::KubeArgs;

/// cobra's `ShellCompDirectiveNoFileComp`: offer only the candidates, no file names.
pub const NO_FILE_COMP: u32 = 4;
/// cobra's `ShellCompDirectiveDefault`: the shell may fall back to file names.
pub const DEFAULT: u32 = 0;

/// What only the cluster or the kubeconfig can list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The QWorkers of the namespace in the words (else the context's).
    QWorkers,
    Namespaces,
    /// The kubeconfig's contexts.
    Contexts,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub value: String,
    pub help: Option<String>,
}

impl Candidate {
    fn new(value: impl Into<String>, help: Option<String>) -> Self {
        Candidate {
            value: value.into(),
            help,
        }
    }
}

/// What to answer for the word under the cursor.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The candidates known from the command line's definition, already matched to the word.
    pub candidates: Vec<Candidate>,
    /// Names to fetch and offer as well.
    pub lookup: Option<Lookup>,
    /// A path is wanted: let the shell complete file names.
    pub files: bool,
    /// Where to look names up: `--kubeconfig`, `--context` and `-n` from the words.
    pub kube: KubeArgs,
    /// What is typed of the value so far.
    typed: String,
    /// Put before each value (`--namespace=` when the value is typed in the same word).
    before: String,
}

impl Plan {
    /// The fetched names that fit what is typed, as candidates.
    pub fn offer(&self, names: Vec<String>) -> Vec<Candidate> {
        names
            .into_iter()
            .filter(|n| n.starts_with(&self.typed))
            .map(|n| Candidate::new(format!("{}{n}", self.before), None))
            .collect()
    }

    fn values(arg: &Arg, typed: &str, before: &str, kube: KubeArgs) -> Plan {
        let mut plan = Plan {
            kube,
            typed: typed.to_owned(),
            before: before.to_owned(),
            ..Plan::default()
        };
        match arg.get_id().as_str() {
            "name" if arg.is_positional() => plan.lookup = Some(Lookup::QWorkers),
            "namespace" => plan.lookup = Some(Lookup::Namespaces),
            "context" => plan.lookup = Some(Lookup::Contexts),
            _ => {
                let fixed: Vec<Candidate> = arg
                    .get_possible_values()
                    .iter()
                    .filter(|v| !v.is_hide_set())
                    .map(|v| {
                        Candidate::new(
                            format!("{before}{}", v.get_name()),
                            v.get_help().map(|h| h.to_string()),
                        )
                    })
                    .collect();
                plan.candidates = matching(fixed, &format!("{before}{typed}"));
                plan.files = plan.candidates.is_empty() && wants_a_path(arg);
            }
        }
        plan
    }
}

/// Reads `words` (the plugin's arguments; the last is the word being completed) against `root`,
/// which must be built (`Command::build`) so that global flags are on every subcommand.
pub fn plan(root: &Command, words: &[String]) -> Plan {
    let (current, before) = match words.split_last() {
        Some((current, before)) => (current.as_str(), before),
        None => ("", &[][..]),
    };
    let mut cmd = root;
    let mut kube = KubeArgs::default();
    let mut positionals = 0;
    let mut seen: Vec<&str> = Vec::new();
    let mut pending: Option<&Arg> = None;
    let mut rest_are_positional = false;
    for word in before {
        if let Some(arg) = pending.take() {
            remember(&mut kube, arg, word);
            continue;
        }
        if rest_are_positional {
            positionals += 1;
        } else if word == "--" {
            rest_are_positional = true;
        } else if let Some(long) = word.strip_prefix("--") {
            let (name, value) = split_value(long);
            if let Some(arg) = by_long(cmd, name) {
                seen.push(arg.get_id().as_str());
                match value {
                    Some(value) => remember(&mut kube, arg, value),
                    None if needs_a_value(arg) => pending = Some(arg),
                    None => {}
                }
            }
        } else if word.len() > 1 && word.starts_with('-') {
            // `-n ns`, `-nns`, `-n=ns`, `-Aw`.
            for (at, short) in word.char_indices().skip(1) {
                let Some(arg) = by_short(cmd, short) else {
                    break;
                };
                seen.push(arg.get_id().as_str());
                if needs_a_value(arg) {
                    let rest = &word[at + short.len_utf8()..];
                    match rest.strip_prefix('=').unwrap_or(rest) {
                        "" => pending = Some(arg),
                        value => remember(&mut kube, arg, value),
                    }
                    break;
                }
            }
        } else if let Some(sub) = (positionals == 0)
            .then(|| cmd.find_subcommand(word))
            .flatten()
        {
            cmd = sub;
            seen.clear();
        } else {
            positionals += 1;
        }
    }

    if let Some(arg) = pending {
        return Plan::values(arg, current, "", kube);
    }
    if rest_are_positional {
        return positional(cmd, positionals, current, kube);
    }
    if let Some((flag, typed)) = current
        .strip_prefix("--")
        .and_then(|long| long.split_once('='))
    {
        return match by_long(cmd, flag) {
            Some(arg) => Plan::values(arg, typed, &format!("--{flag}="), kube),
            None => Plan {
                kube,
                ..Plan::default()
            },
        };
    }
    if current.starts_with('-') {
        return Plan {
            candidates: matching(flags(cmd, &seen, current == "-"), current),
            kube,
            ..Plan::default()
        };
    }
    if positionals == 0 && cmd.has_subcommands() {
        let subcommands = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| Candidate::new(s.get_name(), s.get_about().map(|a| a.to_string())))
            .collect();
        return Plan {
            candidates: matching(subcommands, current),
            kube,
            ..Plan::default()
        };
    }
    positional(cmd, positionals, current, kube)
}

/// The value of the `index`th positional argument of `cmd`.
fn positional(cmd: &Command, index: usize, typed: &str, kube: KubeArgs) -> Plan {
    let mut args: Vec<&Arg> = cmd.get_positionals().collect();
    args.sort_by_key(|a| a.get_index());
    match args.get(index) {
        Some(arg) => Plan::values(arg, typed, "", kube),
        None => Plan {
            kube,
            ..Plan::default()
        },
    }
}

/// The answer in cobra's format. Tabs and line breaks in a description would break it: they
/// become spaces, and only the first line of a description is kept.
pub fn render(candidates: &[Candidate], files: bool) -> String {
    let mut out = String::new();
    for c in candidates {
        out.push_str(&c.value);
        if let Some(help) = c.help.as_deref().and_then(|h| h.lines().next()) {
            out.push('\t');
            out.push_str(&help.replace('\t', " "));
        }
        out.push('\n');
    }
    let directive = if files { DEFAULT } else { NO_FILE_COMP };
    out.push_str(&format!(":{directive}\n"));
    out
}

fn matching(candidates: Vec<Candidate>, typed: &str) -> Vec<Candidate> {
    candidates
        .into_iter()
        .filter(|c| c.value.starts_with(typed))
        .collect()
}

/// The flags of `cmd` not given yet (those that may repeat excepted); short ones too for a bare `-`.
fn flags(cmd: &Command, seen: &[&str], with_short: bool) -> Vec<Candidate> {
    let mut out = Vec::new();
    for arg in cmd.get_arguments().filter(|a| !a.is_positional()) {
        let repeats = matches!(arg.get_action(), ArgAction::Append | ArgAction::Count);
        if arg.is_hide_set() || (seen.contains(&arg.get_id().as_str()) && !repeats) {
            continue;
        }
        let help = arg.get_help().map(|h| h.to_string());
        if let Some(long) = arg.get_long() {
            out.push(Candidate::new(format!("--{long}"), help.clone()));
        }
        if let Some(short) = arg.get_short().filter(|_| with_short) {
            out.push(Candidate::new(format!("-{short}"), help));
        }
    }
    out
}

fn by_long<'c>(cmd: &'c Command, name: &str) -> Option<&'c Arg> {
    cmd.get_arguments().find(|a| {
        a.get_long() == Some(name) || a.get_all_aliases().is_some_and(|all| all.contains(&name))
    })
}

fn by_short(cmd: &Command, short: char) -> Option<&Arg> {
    cmd.get_arguments().find(|a| {
        a.get_short() == Some(short)
            || a.get_all_short_aliases()
                .is_some_and(|all| all.contains(&short))
    })
}

/// Whether the flag takes the next word as its value (`--watch` alone means true: it does not).
fn needs_a_value(arg: &Arg) -> bool {
    arg.get_action().takes_values() && arg.get_num_args().is_none_or(|n| n.min_values() > 0)
}

fn split_value(long: &str) -> (&str, Option<&str>) {
    match long.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (long, None),
    }
}

fn wants_a_path(arg: &Arg) -> bool {
    matches!(
        arg.get_value_hint(),
        ValueHint::AnyPath | ValueHint::FilePath | ValueHint::DirPath | ValueHint::ExecutablePath
    )
}

/// Keeps where to look names up.
fn remember(kube: &mut KubeArgs, arg: &Arg, value: &str) {
    match arg.get_id().as_str() {
        "kubeconfig" => kube.kubeconfig = Some(value.into()),
        "context" => kube.context = Some(value.to_owned()),
        "namespace" => kube.namespace = Some(value.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn plan_for(words: &[&str]) -> Plan {
        let mut cmd = crate::Cli::command();
        cmd.build();
        let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        plan(&cmd, &words)
    }

    fn values(words: &[&str]) -> Vec<String> {
        plan_for(words)
            .candidates
            .into_iter()
            .map(|c| c.value)
            .collect()
    }

    #[test]
    fn subcommands_at_each_level() {
        let top_level = values(&[""]);
        for sub in ["rollout", "top", "completion"] {
            assert!(top_level.contains(&sub.to_owned()), "{top_level:?}");
        }
        assert_eq!(values(&["ro"]), ["rollout"]);
        assert_eq!(
            values(&["rollout", ""]),
            ["status", "restart", "history", "undo", "help"]
        );
        assert_eq!(values(&["rollout", "re"]), ["restart"]);
        // Global flags before the subcommand do not hide it.
        assert_eq!(values(&["-n", "team", "rollout", "hi"]), ["history"]);
        assert_eq!(values(&["--context=kind", "rollout", "u"]), ["undo"]);
        let descriptions = plan_for(&["rollout", "st"]).candidates;
        assert_eq!(descriptions[0].value, "status");
        assert!(descriptions[0]
            .help
            .as_deref()
            .is_some_and(|h| h.starts_with("Watch a rollout")));
    }

    #[test]
    fn names_of_qworkers_where_a_name_goes() {
        for words in [
            &["rollout", "status", ""][..],
            &["rollout", "undo", "ma"],
            &["top", ""],
            &["-n", "team", "rollout", "history", "--revision", "3", ""],
        ] {
            let plan = plan_for(words);
            assert_eq!(plan.lookup, Some(Lookup::QWorkers), "{words:?}");
            assert!(plan.candidates.is_empty());
            assert!(!plan.files);
        }
        // One name only: nothing after it.
        assert_eq!(plan_for(&["rollout", "status", "mail", ""]).lookup, None);
        // Only names that fit what is typed.
        let plan = plan_for(&["rollout", "undo", "ma"]);
        let offered = plan.offer(vec!["mail".into(), "thumbs".into(), "maps".into()]);
        let offered: Vec<&str> = offered.iter().map(|c| c.value.as_str()).collect();
        assert_eq!(offered, ["mail", "maps"]);
    }

    #[test]
    fn the_namespace_and_context_typed_are_where_names_are_looked_up() {
        let plan = plan_for(&[
            "--kubeconfig",
            "/k/config",
            "--context=kind",
            "-n",
            "team-a",
            "top",
            "",
        ]);
        assert_eq!(plan.lookup, Some(Lookup::QWorkers));
        assert_eq!(plan.kube.kubeconfig, Some("/k/config".into()));
        assert_eq!(plan.kube.context.as_deref(), Some("kind"));
        assert_eq!(plan.kube.namespace.as_deref(), Some("team-a"));
        // Global flags count after the subcommand too, in every short form.
        for words in [
            &["top", "-nteam-b", ""][..],
            &["top", "-n=team-b", ""],
            &["top", "--namespace", "team-b", ""],
        ] {
            assert_eq!(
                plan_for(words).kube.namespace.as_deref(),
                Some("team-b"),
                "{words:?}"
            );
        }
    }

    #[test]
    fn flag_values() {
        assert_eq!(values(&["top", "--sort-by", ""]), ["cpu", "memory"]);
        assert_eq!(values(&["top", "--sort-by", "m"]), ["memory"]);
        assert_eq!(values(&["top", "--sort-by=c"]), ["--sort-by=cpu"]);
        assert_eq!(values(&["top", "-o", ""]), ["json", "yaml"]);
        assert_eq!(
            values(&["rollout", "status", "--watch="]),
            ["--watch=true", "--watch=false"]
        );
        assert_eq!(plan_for(&["-n", ""]).lookup, Some(Lookup::Namespaces));
        let plan = plan_for(&["top", "--namespace="]);
        assert_eq!(plan.lookup, Some(Lookup::Namespaces));
        let offered = plan.offer(vec!["team-a".into()]);
        assert_eq!(offered[0].value, "--namespace=team-a");
        assert_eq!(plan_for(&["--context", "k"]).lookup, Some(Lookup::Contexts));
        // A path: the shell's own file names.
        let plan = plan_for(&["top", "--kubeconfig", ""]);
        assert!(plan.files && plan.candidates.is_empty() && plan.lookup.is_none());
        assert_eq!(
            values(&["completion", ""]),
            ["bash", "elvish", "fish", "powershell", "zsh"]
        );
        // A free-form value: nothing to offer, and no file names either.
        let plan = plan_for(&["top", "-l", ""]);
        assert!(!plan.files && plan.candidates.is_empty() && plan.lookup.is_none());
    }

    #[test]
    fn flags_not_given_yet() {
        let flags = values(&["top", "--"]);
        for flag in [
            "--all-namespaces",
            "--sort-by",
            "--watch",
            "--interval",
            "--namespace",
            "--help",
        ] {
            assert!(
                flags.contains(&flag.to_owned()),
                "{flag} missing from {flags:?}"
            );
        }
        assert!(!flags.iter().any(|f| f == "--timeout"), "{flags:?}");
        assert_eq!(values(&["top", "--so"]), ["--sort-by"]);
        let after = values(&["top", "--watch", "-A", "--"]);
        assert!(
            !after.contains(&"--watch".to_owned())
                && !after.contains(&"--all-namespaces".to_owned())
        );
        assert!(after.contains(&"--interval".to_owned()));
        // A bare dash: the short forms too.
        let dash = values(&["top", "-"]);
        assert!(dash.contains(&"-A".to_owned()) && dash.contains(&"--all-namespaces".to_owned()));
        assert!(!values(&["top", "--"]).contains(&"-A".to_owned()));
    }

    #[test]
    fn the_answer_is_in_cobras_format() {
        let answer = render(
            &[
                Candidate::new("status", Some("Watch a rollout\nuntil it ends".into())),
                Candidate::new("mail", None),
                Candidate::new("x", Some("a\ttab".into())),
            ],
            false,
        );
        assert_eq!(answer, "status\tWatch a rollout\nmail\nx\ta tab\n:4\n");
        assert_eq!(render(&[], true), ":0\n");
    }
}
