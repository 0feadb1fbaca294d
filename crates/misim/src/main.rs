//! `misim`: starts parties and drives the simulator. Thin: parse flags, init tracing, dispatch.

use clap::Parser;
use misim::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Keys, stores and exported PEMs are private to the user whatever the shell's umask.
    misim_core::fsperm::private_umask();
    let cli = Cli::parse();
    let is_server = matches!(
        cli.command,
        Command::Up(_) | Command::Aad(_) | Command::Msrp(_) | Command::Imds(_) | Command::Arm(_)
    );
    // Servers log at info; client verbs keep stdout for JSON and log only warnings, to stderr.
    let filter = if is_server {
        cli.log.clone()
    } else {
        "warn".to_string()
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Up(a) => misim::up::run_until_signal(a).await,
        Command::Aad(a) => misim::parties::run_aad(a).await,
        Command::Msrp(a) => misim::parties::run_msrp(a).await,
        Command::Imds(a) => misim::parties::run_imds(a).await,
        Command::Arm(a) => misim::parties::run_arm(a).await,
        Command::Certs { command } => misim::parties::certs(command),
        verb => misim::client::run(verb).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
