use clap::Parser;
/// PID 1 for queue workers (not yet implemented).
#[derive(Parser)]
#[command(version, about)]
struct Args {}
fn main() {
    let _ = Args::parse();
}
