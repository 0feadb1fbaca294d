//! `misim`: starts parties and drives the simulator. Thin: parse flags, init tracing, dispatch.

use clap::Parser;
use misim::cli::{Cli, Command};

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
    // Servers record flows (in memory; OTLP too with --otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT).
    let telemetry = misim_core::telemetry::TelemetryConfig {
        log_filter: filter,
        log_format: cli.log_format,
        otlp_endpoint: cli.otlp_endpoint.clone(),
        service_name: format!("misim-{}", server_name(&cli.command)),
        traces: is_server,
        test_writer: false,
    };
    if let Err(e) = misim_core::telemetry::init(&telemetry) {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let metrics = match (is_server, cli.metrics_listen) {
        (true, Some(addr)) => match misim_core::serve::bind(addr).await {
            Ok(l) => {
                tracing::info!(metrics = %addr, "serving /metrics and /debug/traces");
                let stop = tokio_util::sync::CancellationToken::new();
                let router = misim_core::telemetry::metrics::router();
                tokio::spawn(misim_core::serve::serve_http(l, router, stop.clone()));
                Some(stop)
            }
            Err(e) => {
                eprintln!("error: --metrics-listen: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let result = match cli.command {
        Command::Up(a) => misim::up::run_until_signal(a).await,
        Command::Aad(a) => misim::parties::run_aad(a).await,
        Command::Msrp(a) => misim::parties::run_msrp(a).await,
        Command::Imds(a) => misim::parties::run_imds(a).await,
        Command::Arm(a) => misim::parties::run_arm(a).await,
        Command::Certs { command } => misim::parties::certs(command),
        Command::Repair(a) => misim::repair::run(a),
        Command::Doctor(a) => misim::doctor::run(a).await,
        Command::Scenario(a) => misim::scenario::cli::run(a).await,
        verb => misim::client::run(verb).await,
    };
    if let Some(stop) = metrics {
        stop.cancel();
    }
    misim_core::telemetry::shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The party a server command runs (the exported spans' `service.name`).
fn server_name(command: &Command) -> &'static str {
    match command {
        Command::Up(_) => "up",
        Command::Aad(_) => "aad",
        Command::Msrp(_) => "msrp",
        Command::Imds(_) => "imds",
        Command::Arm(_) => "arm",
        _ => "cli",
    }
}
