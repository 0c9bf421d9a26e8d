//! The `settingsd` binary: parse the command line, set up logging, hand over
//! to the library.

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use settingsd::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's allocator: a request allocates and frees
/// dozens of small buffers on whichever worker runs it, and glibc's arenas
/// spent a sixth of a Set's CPU in `malloc`/`free` and their consolidation
/// (BENCHMARKS.md, "Durable writes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The service logs at info by default; the client commands only warn, so
    // their stdout stays the JSON a script reads.
    let default_level = match cli.command {
        Command::Serve(_) | Command::Bridge(_) | Command::BenchNoopServer { .. } => "info",
        Command::Get(_)
        | Command::Set(_)
        | Command::Watch(_)
        | Command::Admin(_)
        | Command::History(_)
        | Command::Rollback(_)
        | Command::Export(_)
        | Command::Import(_)
        | Command::Bench(_) => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match settingsd::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("settingsd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
