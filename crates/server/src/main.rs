//! The `amdahl` binary. For now one subcommand: `bench`, which runs a seeded workload
//! through the serial engine and/or pipelines and prints one JSON object of figures.
#![forbid(unsafe_code)]

mod bench;

use clap::{CommandFactory, Parser, Subcommand, error::ErrorKind};

/// mimalloc, counted: `amdahl bench` reports allocations per command.
#[global_allocator]
static GLOBAL: amdahl_alloc::Counting<mimalloc::MiMalloc> =
    amdahl_alloc::Counting::new(mimalloc::MiMalloc);

#[derive(Parser, Debug)]
#[command(name = "amdahl", version, about = "amdahl: a leveraged-derivatives exchange engine")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a seeded workload through the engine and print one JSON object of figures
    /// (throughput, latency percentiles, reject counts, event and state hashes).
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Bench(args) => {
            if let Some(&t) = args.threads.iter().find(|&&t| t == 0 || t > 256) {
                usage_error(ErrorKind::InvalidValue, format!("--threads {t}: need 1..=256"));
            }
            for &t in args.threads.iter().filter(|&&t| t > 1) {
                if let Err(e) = args.topology(t).validate() {
                    usage_error(ErrorKind::InvalidValue, format!("--threads {t}: {e}"));
                }
            }
            let config = args.workload();
            if let Err(e) = config.validate() {
                usage_error(ErrorKind::InvalidValue, format!("invalid workload: {e}"));
            }
            let report = bench::run(&args);
            println!("{}", serde_json::to_string_pretty(&report.json).expect("JSON"));
            if report.halted {
                eprintln!("amdahl bench: the engine halted (audit failure); see \"halt\"");
                std::process::exit(1);
            }
        }
    }
}

/// Print a usage error in clap's format (with the usage line) and exit with status 2.
fn usage_error(kind: ErrorKind, message: String) -> ! {
    let mut cmd = Cli::command();
    let bench = cmd.find_subcommand_mut("bench").expect("bench subcommand").clone();
    bench.bin_name("amdahl bench").error(kind, message).exit()
}
