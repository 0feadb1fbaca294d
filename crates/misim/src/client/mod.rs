//! The client verbs: each turns a command into ARM gRPC calls (or, for `token get`, an IMDS HTTP call)
//! and prints az-shaped JSON. Nothing here talks to MSRP, Azure AD or hosts directly, except `misim ad`
//! (ad.rs: Azure AD's Applications API, the part of Microsoft Graph misim has).

use anyhow::{bail, Context};
use misim_proto::arm::{self as pb, arm_client::ArmClient};
use misim_proto::tonic::service::interceptor::InterceptedService;
use misim_proto::tonic::transport::Channel;
use serde_json::Value;

use crate::cli::*;
use crate::output;

pub mod ad;
pub mod aks;
pub mod bench;
pub mod clock;
pub mod events;
pub mod fault;
mod identity;
mod keyvault;
mod rbac;
mod resources;
mod token;
pub mod trace;
mod webapp;

use identity::*;
use keyvault::*;
use rbac::*;
use resources::*;
use token::*;
use webapp::*;

/// The CLI's ARM client: bearer token added when set.
pub type Arm = ArmClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer <token>` to every call when a token is set (`--arm-token`).
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Connects to ARM's gRPC API, sending `token` as a bearer token when given.
///
/// # Errors
/// When `url` is malformed or nothing answers there (the message says how to start misim).
pub async fn connect(url: &str, token: Option<&str>) -> anyhow::Result<Arm> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        anyhow::bail!("--arm / MISIM_ARM must be a URL such as http://127.0.0.1:7700, not {url:?}");
    }
    let token = token
        .map(|t| {
            format!("Bearer {t}")
                .parse()
                .context("MISIM_ARM_TOKEN has characters not allowed in a header")
        })
        .transpose()?;
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .with_context(|| format!("--arm / MISIM_ARM {url:?} is not a valid URL"))?
        .connect()
        .await
        .with_context(|| {
            format!("cannot reach ARM at {url}: is `misim up` running? (set --arm or MISIM_ARM)")
        })?;
    let _ = ARM_URL.set(url.to_string());
    Ok(ArmClient::with_interceptor(channel, BearerToken(token)))
}

/// The ARM endpoint this invocation talks to, for error messages.
static ARM_URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn arm_url() -> &'static str {
    ARM_URL.get().map(String::as_str).unwrap_or("?")
}

/// Turns a gRPC status into a one-line error with ARM's message.
pub(crate) fn status(s: tonic::Status) -> anyhow::Error {
    if s.message().contains("invalid compression flag") || s.message().contains("content-type") {
        // An HTTP server answered instead of a gRPC one: typically ARM's REST port (7701).
        return anyhow::anyhow!(
            "{url} (from --arm / MISIM_ARM) answered HTTP, not gRPC: use ARM's gRPC endpoint \
             (arm_grpc in misim-data/endpoints.json, default http://127.0.0.1:7700), not its REST port \
             or another server",
            url = arm_url()
        );
    }
    match s.code() {
        tonic::Code::Unimplemented => anyhow::anyhow!(
            "the server at {url} is not misim's ARM (it does not serve misim.arm.v1.Arm): set --arm or \
             MISIM_ARM to arm_grpc from misim-data/endpoints.json",
            url = arm_url()
        ),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal => anyhow::anyhow!(
            "{}: {} (ARM at {}; is `misim up` still running? --arm / MISIM_ARM choose the endpoint)",
            code_name(s.code()),
            s.message(),
            arm_url()
        ),
        tonic::Code::Unauthenticated => anyhow::anyhow!(
            "ARM at {} refused the call: {}",
            arm_url(),
            s.message()
        ),
        _ => anyhow::anyhow!("{}: {}", code_name(s.code()), s.message()),
    }
}

fn code_name(c: tonic::Code) -> &'static str {
    match c {
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::AlreadyExists => "conflict",
        tonic::Code::FailedPrecondition => "failed precondition",
        tonic::Code::PermissionDenied => "forbidden",
        tonic::Code::Unavailable => "unavailable",
        _ => "error",
    }
}

/// `endpoint` parsed, when it is on a loopback address. Safety: local mode serves IMDS and the App
/// Service identity endpoint on loopback only; the CLI never calls any other address.
///
/// # Errors
/// When `endpoint` (named `what` in the message) is not a URL or not a loopback one.
pub(crate) fn loopback_url(endpoint: &str, what: &str) -> anyhow::Result<url::Url> {
    let url = url::Url::parse(endpoint).with_context(|| format!("bad {what} {endpoint:?}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if !loopback {
        bail!("refusing to call non-loopback {what} {endpoint}");
    }
    Ok(url)
}

pub(crate) fn print(v: &Value) {
    print_text(&serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints `text` and a newline to stdout; a closed pipe (`misim … | head -1`) is not an error.
pub fn print_text(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to stdout: {e}");
        }
    }
}

/// Runs one client verb against ARM (its `--arm` / `--arm-token`), or against Azure AD, the trace
/// store, the clock, the fault table or the event log for the verbs that name those, printing JSON
/// to stdout. Server commands and `misim scenario` are dispatched by the binary, not here.
///
/// # Errors
/// When ARM is unreachable or answers with an error (the message is ARM's), or `command` is not a
/// client verb.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        // `misim ad …` talks to Azure AD (Microsoft Graph's part), not ARM.
        Command::Ad(args) => ad::run(args).await,
        Command::Trace(args) => trace::run(args).await,
        Command::Clock(args) => clock::run(args).await,
        Command::Fault(args) => fault::run(args).await,
        Command::Events(args) => events::run(args).await,
        Command::Account {
            conn,
            command: AccountCommand::Show,
        } => {
            let s = arm(&conn)
                .await?
                .get_account(pb::GetAccountRequest::default())
                .await
                .map_err(status)?;
            print(&output::subscription(&s.into_inner()));
            Ok(())
        }
        Command::Group { conn, command } => group(&mut arm(&conn).await?, command).await,
        Command::Vm { conn, command } => vm(&mut arm(&conn).await?, command).await,
        Command::Identity { conn, command } => identity(&mut arm(&conn).await?, command).await,
        Command::Vmss { conn, command } => vmss(&mut arm(&conn).await?, command).await,
        Command::Keyvault { conn, command } => keyvault(&mut arm(&conn).await?, command).await,
        Command::Role { conn, command } => role(&mut arm(&conn).await?, command).await,
        Command::Token { conn, command } => token(&mut arm(&conn).await?, command).await,
        Command::Webapp { conn, command } => webapp(&mut arm(&conn).await?, command).await,
        Command::Aks { conn, command } => aks::aks(&mut arm(&conn).await?, command).await,
        Command::Bench { conn, command } => bench::bench(&mut arm(&conn).await?, command).await,
        Command::Up(_)
        | Command::Scenario(_)
        | Command::Aad(_)
        | Command::Msrp(_)
        | Command::Imds(_)
        | Command::Arm(_)
        | Command::Repair(_)
        | Command::Doctor(_)
        | Command::Certs { .. } => bail!("not a client verb"),
    }
}

/// ARM's client for a verb's `--arm` / `--arm-token`.
async fn arm(conn: &ArmConn) -> anyhow::Result<Arm> {
    connect(&conn.arm, conn.arm_token.as_deref()).await
}
