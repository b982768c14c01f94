//! The options of `timeline` (its doc comments are the `--help`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::duration::parse_duration;

#[derive(Args, Debug)]
pub struct TimelineArgs {
    /// The QWorker's name.
    #[arg(required_unless_present = "from_samples")]
    pub name: Option<String>,

    /// Record for this long (e.g. 90s, 2m); without it (or 0), until Ctrl-C or SIGTERM.
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Where to write the picture; its extension picks the format: .svg or .png.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,

    /// How often to sample the QWorker and its pods.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,

    /// Also write the recorded samples as JSON, to draw them again with --from-samples.
    #[arg(long, value_name = "FILE")]
    pub save_samples: Option<PathBuf>,

    /// Draw samples saved with --save-samples instead of recording (no cluster needed).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["name", "duration", "save_samples"])]
    pub from_samples: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([&["kubectl-qworker", "timeline"], args].concat())
    }

    #[test]
    fn a_name_or_saved_samples_and_an_output() {
        let cli = parse(&["w", "--for", "2m", "-o", "run.svg", "-n", "ns"]).unwrap();
        let Command::Timeline(args) = cli.command else {
            panic!("not timeline")
        };
        assert_eq!(args.name.as_deref(), Some("w"));
        assert_eq!(args.duration, Some(std::time::Duration::from_secs(120)));
        assert_eq!(args.interval, std::time::Duration::from_secs(1));
        assert!(parse(&["--from-samples", "run.json", "-o", "x.png"]).is_ok());
        for bad in [
            &["-o", "run.svg"][..],
            &["w"],
            &["w", "--from-samples", "run.json", "-o", "x.png"],
            &["--from-samples", "run.json", "--for", "1m", "-o", "x.png"],
            &["w", "--for", "soon", "-o", "x.png"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
