//! Benchmark (prints figures; not a timed test): latency of a burst of concurrent `CreateIdentity`
//! calls (step 2: key + certificate + service principal in the real Azure AD), with the key pool
//! disabled and with it filled beforehand.
//!
//! Run: `cargo bench -p misim-msrp --bench create_burst` (env `BURST` = calls per burst, default 16;
//! `POOL` = pool size for the second run, default 16).

use std::time::{Duration, Instant};

use misim_core::Clock;
use misim_proto::msrp::msrp_client::MsrpClient;
use misim_proto::msrp::{CreateIdentityRequest, IdentityKind};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts the real Azure AD on loopback; returns its admin gRPC URL and the default tenant ID.
async fn start_aad(dir: &std::path::Path, shutdown: CancellationToken) -> (String, String) {
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc_url = format!("http://{}", grpc.local_addr().expect("addr"));
    let http_url = format!("http://{}", http.local_addr().expect("addr"));
    let config = misim_aad::Config::new(dir.join("aad"), http_url, Clock::system());
    let listeners = misim_aad::Listeners {
        grpc,
        http,
        https: None,
    };
    tokio::spawn(misim_aad::run(config, listeners, shutdown));
    let channel = tonic::transport::Channel::from_shared(grpc_url.clone())
        .expect("url")
        .connect_lazy();
    let mut admin = misim_proto::aad::aad_admin_client::AadAdminClient::new(channel);
    let tenant = loop {
        match admin
            .ensure_default_tenant(misim_proto::aad::EnsureDefaultTenantRequest {})
            .await
        {
            Ok(t) => break t.into_inner().tenant_id,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    (grpc_url, tenant)
}

async fn burst(pool: usize, n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let shutdown = CancellationToken::new();
    let (aad_grpc, tenant) = start_aad(dir.path(), shutdown.clone()).await;
    let mut config = misim_msrp::Config::new(dir.path().join("msrp"), aad_grpc, Clock::system());
    config.key_pool_size = pool;
    let msrp = misim_msrp::open(&config, shutdown.clone()).expect("msrp opens");
    let fill = Instant::now();
    msrp.key_pool().wait_filled().await;
    let fill = fill.elapsed();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let routes = tonic::service::Routes::new(misim_msrp::grpc::server(
        msrp.clone(),
        misim_core::control::ControlAuth::Off,
    ));
    tokio::spawn(misim_core::serve::serve_grpc(
        listener,
        routes,
        &[],
        shutdown.clone(),
    ));
    let client = MsrpClient::connect(url).await.expect("connect");

    let start = Instant::now();
    let mut calls = Vec::new();
    for i in 0..n {
        let mut client = client.clone();
        let tenant = tenant.clone();
        calls.push(tokio::spawn(async move {
            let t = Instant::now();
            let req = CreateIdentityRequest {
                resource_id: format!(
                    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/\
                     providers/Microsoft.ManagedIdentity/userAssignedIdentities/id{i}"
                ),
                kind: IdentityKind::UserAssigned as i32,
                tenant_id: tenant,
            };
            client.create_identity(req).await.expect("create succeeds");
            t.elapsed()
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for c in calls {
        latencies.push(c.await.expect("task"));
    }
    let total = start.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let stats = msrp.key_pool().stats();
    println!(
        "pool={pool:<3} burst={n:<3} total={:>7.1} ms  p50={:>7.1} ms  p95={:>7.1} ms  max={:>7.1} ms  \
         keys from pool={} on demand={}  (pool filled in {:.1} s beforehand)",
        ms(total),
        ms(pct(0.5)),
        ms(pct(0.95)),
        ms(pct(1.0)),
        stats.from_pool,
        stats.on_demand,
        fill.as_secs_f64(),
    );
    shutdown.cancel();
    drop(client);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let n = env_usize("BURST", 16);
    let pool = env_usize("POOL", 16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        burst(0, n).await;
        burst(pool, n).await;
    });
}
