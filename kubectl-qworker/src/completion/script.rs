//! `completion SHELL`: the completion script for `kubectl-qworker`, generated from the command
//! line's definition so that it never lags behind it.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::error::Result;
use crate::Cli;

/// The command the script completes (the binary's name; `kubectl qworker` goes through kubectl).
pub const BIN_NAME: &str = "kubectl-qworker";

pub fn write_script(shell: Shell, out: &mut impl Write) -> Result<ExitCode> {
    // clap_complete panics on a failed write: generate into memory, then write with an error.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN_NAME, &mut script);
    let mut script = String::from_utf8_lossy(&script).into_owned();
    if shell == Shell::Bash {
        script = fix_bash_states(&script);
    }
    out.write_all(script.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// clap_complete's bash script spells a subcommand's state two ways when the binary's name has a
/// hyphen (the loop `kubectl__qworker__subcmd__top`, the case arm `kubectl__subcmd__qworker__subcmd__top`),
/// so nothing after a subcommand completes (clap-rs/clap#6421, open): the arms get the loop's spelling.
fn fix_bash_states(script: &str) -> String {
    const SEP: &str = "__subcmd__";
    let arm = format!("{}{SEP}", BIN_NAME.replace('-', SEP));
    let state = format!("{}{SEP}", BIN_NAME.replace('-', "__"));
    script.replace(&arm, &state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: Shell) -> String {
        let mut out = Vec::new();
        assert_eq!(write_script(shell, &mut out).unwrap(), ExitCode::SUCCESS);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn each_script_completes_the_binary_and_knows_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = script(shell);
            assert!(text.contains(BIN_NAME), "{shell}: {text}");
            for word in ["rollout", "status", "top", "sort-by", "completion"] {
                assert!(text.contains(word), "{shell} script lacks {word}");
            }
        }
        assert!(script(Shell::Bash).contains("complete -F _kubectl__qworker"));
        assert!(script(Shell::Zsh).starts_with("#compdef kubectl-qworker"));
    }
}
