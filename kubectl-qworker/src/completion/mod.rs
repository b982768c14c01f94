//! Shell completion, two ways.
//!
//! - [`script`]: `kubectl-qworker completion SHELL`: a script (clap_complete) for typing
//!   `kubectl-qworker ...` itself; subcommands, flags and their fixed values.
//! - `kubectl_complete-qworker` (src/bin/complete.rs): what kubectl 1.26 and later runs for
//!   `kubectl qworker ...<TAB>`, answered by [`complete`]: [`words`] decides what the word under the
//!   cursor can be, [`names`] fetches what only the cluster or the kubeconfig knows (QWorker names,
//!   namespaces, contexts), and the answer is in cobra's `__complete` format.

pub mod names;
pub mod script;
pub mod words;

use clap::CommandFactory;

pub use script::write_script;

use crate::Cli;

/// The answer to kubectl for the plugin's words (the last one is the word being completed, maybe
/// empty): candidates one per line, `VALUE\tDESCRIPTION`, then `:DIRECTIVE`.
pub async fn complete(words: &[String]) -> String {
    let mut command = Cli::command();
    command.build();
    let plan = words::plan(&command, words);
    let mut candidates = plan.candidates.clone();
    if let Some(lookup) = plan.lookup {
        candidates.extend(plan.offer(names::lookup(lookup, &plan.kube).await));
    }
    words::render(&candidates, plan.files)
}
