//! The default workload as a standalone program, for tests and for agents embedded in other
//! binaries: `muster-agent-workload default-workload --pod-name NAME [--port P/TCP]...`.

use muster_agent::workload::{DEFAULT_WORKLOAD_SUBCOMMAND, WorkloadArgs, default_workload_main};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = match args.split_first() {
        Some((sub, rest)) if sub == DEFAULT_WORKLOAD_SUBCOMMAND => rest,
        _ => &args[..],
    };
    match WorkloadArgs::parse(rest) {
        Ok(parsed) => default_workload_main(&parsed),
        Err(e) => {
            eprintln!("muster-agent-workload: {e}");
            std::process::exit(2);
        }
    }
}
