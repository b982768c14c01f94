use clap::Parser;
/// Scales QWorker pods by queue depth (not yet implemented).
#[derive(Parser)]
#[command(version, about)]
struct Args {}
fn main() {
    let _ = Args::parse();
}
