//! `timeline NAME --for 2m -o run.svg|run.png`: a picture of a QWorker over time.
//!
//! - [`args`]: the options.
//! - [`samples`]: what is recorded (counts, pod states, Event markers), from API objects.
//! - [`record`]: reading the cluster every interval (the only part that talks to it).
//! - [`layout`]: samples to drawing primitives, a pure function.
//! - [`svg`], [`png`]: the primitives written as SVG, and the SVG rasterized.

pub mod args;
pub mod layout;
pub mod png;
pub mod record;
pub mod samples;
pub mod svg;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use args::TimelineArgs;
use samples::Recording;

use crate::cli::KubeArgs;
use crate::client;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot tell the picture's format from {0:?}: name it *.svg or *.png")]
    Format(PathBuf),

    #[error("give the NAME of the QWorker to record, or --from-samples FILE")]
    NoName,

    #[error("no font found for the PNG's text (searched the system font directories): install one (e.g. DejaVu Sans) or write an .svg, which needs none")]
    NoFonts,

    #[error("cannot handle Ctrl-C and SIGTERM: {0}")]
    Signals(std::io::Error),

    #[error("cannot render the PNG: {0}")]
    Render(String),

    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} is not a timeline recording (written by --save-samples): {source}")]
    BadSamples {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The picture's format, from the output file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    pub fn of(path: &Path) -> Result<Format, Error> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => Err(Error::Format(path.to_owned())),
        }
    }
}

/// Records (or reads saved samples), then writes the picture and says where.
pub async fn run(
    kube: &KubeArgs,
    args: &TimelineArgs,
    out: &mut impl Write,
) -> crate::Result<ExitCode> {
    // Refuse a bad output before recording for minutes, not after.
    let format = Format::of(&args.output)?;
    if format == Format::Png {
        png::check_fonts()?;
    }
    let recording = match (&args.from_samples, &args.name) {
        (Some(path), _) => read_samples(path)?,
        (None, Some(name)) => {
            let ctx = client::connect(kube).await?;
            let duration = args.duration.filter(|d| !d.is_zero());
            record::record(&ctx, name, duration, args.interval).await?
        }
        (None, None) => return Err(Error::NoName.into()),
    };
    if let Some(path) = &args.save_samples {
        let json = serde_json::to_vec_pretty(&recording)
            .map_err(|e| crate::Error::Encode(e.to_string()))?;
        write(path, &json)?;
    }
    let svg = svg::to_svg(&layout::layout(&recording));
    let bytes = match format {
        Format::Svg => svg.into_bytes(),
        Format::Png => png::to_png(&svg)?,
    };
    write(&args.output, &bytes)?;
    writeln!(out, "timeline written to {}", args.output.display())?;
    Ok(ExitCode::SUCCESS)
}

fn read_samples(path: &Path) -> Result<Recording, Error> {
    let text = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| Error::BadSamples {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_picks_the_format() {
        assert_eq!(Format::of(Path::new("run.svg")).ok(), Some(Format::Svg));
        assert_eq!(Format::of(Path::new("a/b/RUN.PNG")).ok(), Some(Format::Png));
        for bad in ["run", "run.jpg", "svg"] {
            let err = Format::of(Path::new(bad)).unwrap_err().to_string();
            assert!(err.contains("name it *.svg or *.png"), "{bad}: {err}");
        }
    }
}
