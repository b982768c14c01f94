//! `kubectl_complete-qworker`: kubectl (1.26 and later) runs it for `kubectl qworker ...<TAB>` with
//! the plugin's words, the last one being completed, and relays what it prints (cobra's format).
//! It prints no errors: a failed lookup just offers fewer names.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let words: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::FAILURE;
    };
    let answer = runtime.block_on(kubectl_qworker::completion::complete(&words));
    match std::io::stdout().write_all(answer.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
