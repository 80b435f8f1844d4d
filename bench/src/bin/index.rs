//! Writes `index.html` in the bench directory: every bench page of the
//! last run, linked, with its headline lines (`report::write_index`).

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Where the benches wrote their JSON and HTML.
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listed = netd_bench::report::write_index(&args.dir)?;
    anyhow::ensure!(listed > 0, "no bench summary in {}", args.dir.display());
    Ok(())
}
