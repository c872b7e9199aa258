//! The `muster` binary: command-line parsing and wiring. Logic lives in the library crates.

mod apiserver_cmd;
mod cli;
mod components;
mod up;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    // The agent re-executes this binary to run the built-in default workload of a container
    // that has no command; that hidden subcommand needs no runtime and no CLI parsing.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(muster_agent::DEFAULT_WORKLOAD_SUBCOMMAND) {
        match muster_agent::WorkloadArgs::parse(&argv[2..]) {
            Ok(args) => muster_agent::default_workload_main(&args),
            Err(e) => anyhow::bail!("{}: {e}", muster_agent::DEFAULT_WORKLOAD_SUBCOMMAND),
        }
    }
    let cli = cli::Cli::parse();
    cli::init_tracing(&cli);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(cli::run(cli))
}
