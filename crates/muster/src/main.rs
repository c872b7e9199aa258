//! The `muster` binary: command-line parsing and wiring. Logic lives in the library crates.

mod apiserver_cmd;
mod cli;
mod up;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    cli::init_tracing(&cli);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(cli::run(cli))
}
