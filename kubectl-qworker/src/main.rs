use clap::Parser;
/// kubectl plugin for QWorkers (not yet implemented).
#[derive(Parser)]
#[command(version, about)]
struct Args {}
fn main() {
    let _ = Args::parse();
}
