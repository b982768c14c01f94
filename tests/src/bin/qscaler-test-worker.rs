use clap::Parser;
/// Test worker (not yet implemented).
#[derive(Parser)]
#[command(version, about)]
struct Args {}
fn main() {
    let _ = Args::parse();
}
