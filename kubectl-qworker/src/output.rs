//! `-o json|yaml`: the row model itself, serialized.

use std::io::Write;

use serde::Serialize;

use crate::cli::OutputFormat;
use crate::error::{Error, Result};

/// Writes `value` as pretty JSON or YAML.
pub fn write_structured(
    out: &mut impl Write,
    format: OutputFormat,
    value: &impl Serialize,
) -> Result<()> {
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, value)
                .map_err(|e| Error::Encode(e.to_string()))?;
            writeln!(out)?;
        }
        OutputFormat::Yaml => {
            let text = serde_saphyr::to_string(value).map_err(|e| Error::Encode(e.to_string()))?;
            out.write_all(text.as_bytes())?;
        }
    }
    Ok(())
}
