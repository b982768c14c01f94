//! Writes the CRD manifests next to the crate (`crds/*.yaml`), or prints them with `--stdout`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let to_stdout = std::env::args().any(|a| a == "--stdout");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, yaml) in qscaler_crds::crdgen::manifests() {
        if to_stdout {
            print!("---\n{yaml}");
        } else {
            std::fs::write(dir.join(file), yaml)?;
            eprintln!("wrote crds/{file}");
        }
    }
    Ok(())
}
