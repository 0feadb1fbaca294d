//! Integration tests of misim-arm against fake peers (MSRP, host agents, Azure AD), all on
//! 127.0.0.1:0 listeners with a temporary data directory.
#![allow(missing_docs)] // helpers shared by the test modules, not an API

mod fakes;
mod flow;
mod identities;
mod races;
mod rest;
mod rest_clients;
mod roles;
mod scale_sets;

use std::path::Path;
use std::sync::Arc;

use misim_arm::{Arm, Config, HostEndpoint};
use misim_core::Clock;
use misim_proto::arm::arm_client::ArmClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use fakes::{FakeAadAdmin, FakeHost, FakeMsrp};

/// Start of every test clock, epoch seconds.
pub const T0: i64 = 1_800_000_000;

/// Fake peers of ARM, served until the sandbox is dropped.
pub struct FakePeers {
    pub msrp: FakeMsrp,
    pub hosts: Vec<FakeHost>,
    pub aad: FakeAadAdmin,
    msrp_url: String,
    aad_grpc: String,
    host_urls: Vec<String>,
    shutdown: CancellationToken,
}

impl FakePeers {
    pub async fn start() -> Self {
        let shutdown = CancellationToken::new();
        let msrp = FakeMsrp::default();
        let msrp_url = msrp.serve(shutdown.clone()).await;
        let aad = FakeAadAdmin::default();
        let aad_grpc = aad.serve(shutdown.clone()).await;
        let hosts = vec![FakeHost::new("host-1"), FakeHost::new("host-2")];
        let mut host_urls = Vec::new();
        for h in &hosts {
            host_urls.push(h.serve(shutdown.clone()).await);
        }
        FakePeers {
            msrp,
            hosts,
            aad,
            msrp_url,
            aad_grpc,
            host_urls,
            shutdown,
        }
    }

    pub fn config(&self, data_dir: &Path, aad_url: &str, clock: Clock) -> Config {
        Config {
            data_dir: data_dir.to_path_buf(),
            msrp_grpc: self.msrp_url.clone(),
            aad_grpc: self.aad_grpc.clone(),
            aad_url: aad_url.to_string(),
            hosts: self
                .hosts
                .iter()
                .zip(&self.host_urls)
                .map(|(h, url)| HostEndpoint {
                    name: h.name.clone(),
                    agent_grpc: url.clone(),
                })
                .collect(),
            clock,
            control: None,
            api_token: None,
            public_rest_url: None,
        }
    }
}

impl Drop for FakePeers {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// ARM (core, gRPC and REST) in-process over fake peers.
pub struct Sandbox {
    pub peers: FakePeers,
    pub arm: Arc<Arm>,
    pub client: ArmClient<Channel>,
    pub rest_url: String,
    pub clock: Clock,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Sandbox {
    /// Starts ARM with Azure AD HTTP at `aad_url` (only REST tests contact it).
    pub async fn start_with_aad(aad_url: &str) -> Self {
        let peers = FakePeers::start().await;
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual(T0);
        let config = peers.config(dir.path(), aad_url, clock.clone());
        let arm = misim_arm::build(&config).unwrap();
        let shutdown = CancellationToken::new();
        arm.bootstrap(&shutdown).await.unwrap().unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_url = format!("http://{}", grpc.local_addr().unwrap());
        let rest = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rest_url = format!("http://{}", rest.local_addr().unwrap());
        let routes = tonic::service::Routes::new(misim_arm::grpc::ArmGrpc::server(arm.clone()));
        tokio::spawn(misim_core::serve::serve_grpc(
            grpc,
            routes,
            &[],
            shutdown.clone(),
        ));
        let validator = misim_arm::rest::auth::TokenValidator::new(aad_url, clock.clone()).unwrap();
        let router = misim_arm::rest::router(misim_arm::rest::RestState {
            arm: arm.clone(),
            validator: Arc::new(validator),
        });
        tokio::spawn(misim_core::serve::serve_http(
            rest,
            router,
            shutdown.clone(),
        ));
        let client = ArmClient::connect(grpc_url).await.unwrap();
        Sandbox {
            peers,
            arm,
            client,
            rest_url,
            clock,
            dir,
            shutdown,
        }
    }

    pub async fn start() -> Self {
        Self::start_with_aad("http://127.0.0.1:9").await
    }

    pub fn msrp(&self) -> &FakeMsrp {
        &self.peers.msrp
    }

    pub fn host(&self, name: &str) -> &FakeHost {
        self.peers.hosts.iter().find(|h| h.name == name).unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
