//! `misim up`'s edges: VM IMDS ports from a configured range, one `misim up` per data directory,
//! absolute paths in endpoints.json, and endpoints.json removed when misim stops.

use misim::up::{start, UpConfig};
use misim_proto::arm as pb;

fn config(dir: &std::path::Path) -> UpConfig {
    let mut cfg = UpConfig::new(dir.to_path_buf());
    cfg.base_port = 0;
    cfg.hosts = 1;
    cfg
}

/// A block of `n` ports free right now.
fn free_range(n: u16) -> std::ops::RangeInclusive<u16> {
    'outer: for _ in 0..50 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let start = probe.local_addr().unwrap().port();
        drop(probe);
        if start > 60_000 {
            continue;
        }
        for p in start..start + n {
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_err() {
                continue 'outer;
            }
        }
        return start..=start + n - 1;
    }
    panic!("no free port range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_imds_ports_come_from_the_configured_range() {
    let dir = tempfile::tempdir().unwrap();
    let range = free_range(5);
    let mut cfg = config(dir.path());
    cfg.vm_ports = Some(range.clone());
    let system = start(cfg).await.expect("starts");
    let mut arm =
        misim_proto::arm::arm_client::ArmClient::connect(system.endpoints.arm_grpc.clone())
            .await
            .unwrap();
    arm.create_resource_group(pb::CreateResourceGroupRequest {
        name: "rg".into(),
        location: "westeurope".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for name in ["a", "b"] {
        let vm = arm
            .create_vm(pb::CreateVmRequest {
                resource_group: "rg".into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let port: u16 = vm
            .imds_endpoint
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            range.contains(&port),
            "{} outside {range:?}",
            vm.imds_endpoint
        );
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_misim_per_data_dir_absolute_paths_and_no_stale_endpoints_file() {
    let dir = tempfile::tempdir().unwrap();
    // A relative data directory still gives absolute paths.
    let cwd_relative = pathdiff(dir.path());
    let system = start(config(&cwd_relative)).await.expect("starts");
    assert!(std::path::Path::new(&system.endpoints.ca_file).is_absolute());
    let file = dir.path().join("endpoints.json");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(std::path::Path::new(written["ca_file"].as_str().unwrap()).is_absolute());

    let second = start(config(dir.path())).await;
    let err = format!(
        "{:#}",
        second.err().expect("a second misim on the same dir fails")
    );
    assert!(err.contains("in use by another `misim up`"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );

    system.stop().await;
    assert!(!file.exists(), "endpoints.json removed on stop");
    // The lock is released: the same directory starts again, with its state.
    let again = start(config(dir.path())).await.expect("restarts");
    assert!(again.resumed);
    again.stop().await;
}

/// `p` relative to the current directory when it can be (`../../tmp/...`), else `p`.
fn pathdiff(p: &std::path::Path) -> std::path::PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let ups = cwd.components().count() - 1;
    let mut rel = std::path::PathBuf::new();
    for _ in 0..ups {
        rel.push("..");
    }
    rel.push(p.strip_prefix("/").unwrap());
    rel
}
