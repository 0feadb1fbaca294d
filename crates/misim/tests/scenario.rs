//! The published scenario schema is the one the Rust types generate, and the worked examples in
//! scenarios/ parse; one runs on an embedded misim (misim::embedded, port 0) through the runner.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn published_schema_equals_the_generated_one() {
    let published = std::fs::read_to_string(root().join("docs/scenario.schema.json")).unwrap();
    assert_eq!(
        published,
        misim::scenario::schema_json(),
        "docs/scenario.schema.json is stale: misim scenario schema > docs/scenario.schema.json"
    );
}

#[test]
fn every_shipped_scenario_parses_and_errors_name_the_line() {
    for dir in ["scenarios", "scenarios/failing"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                let text = std::fs::read_to_string(&p).unwrap();
                misim::scenario::parse(&p.display().to_string(), &text).unwrap();
            }
        }
    }
    let bad =
        "name: x\nsteps:\n  - misim: group list\n  - token: {group: rg1, vm: vm1, colour: red}\n";
    let err = misim::scenario::parse("bad.yaml", bad).unwrap_err();
    assert!(err.starts_with("bad.yaml:4:"), "{err}");
    assert!(err.contains("colour"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_runs_on_an_embedded_misim_and_its_requests_are_recorded() {
    let running = misim::embedded::start(misim::embedded::EmbeddedConfig::default())
        .await
        .unwrap();
    let doc = r#"
name: embedded
steps:
  - misim: group create -n rg1 -l westeurope
  - misim: vm create -g rg1 -n vm1
  - misim: vm identity assign -g rg1 -n vm1 --identities system
  - token: {group: rg1, vm: vm1}
    expect: {status: 200, aad_calls: 1}
  - name: wrong on purpose
    token: {group: rg1, vm: vm1}
    expect: {status: 200, cache_hit: false}
  - events: {party: aad, operation: /oauth2/}
    expect: {count: 1}
"#;
    let sc = misim::scenario::parse("embedded.yaml", doc).unwrap();
    let target = misim::scenario::Target {
        endpoints: running.endpoints.clone(),
        data_dir: running.data_dir.clone(),
        misim_bin: PathBuf::from(env!("CARGO_BIN_EXE_misim")),
    };
    let mut runner = misim::scenario::Runner::new(target).unwrap();
    let r = runner.run("embedded.yaml", &sc, |_| {}).await;
    let failed: Vec<_> = r
        .steps
        .iter()
        .filter(|s| !s.passed)
        .map(|s| s.index)
        .collect();
    assert_eq!(failed, vec![5], "{:#?}", r.steps);
    assert!(r.steps[4].diff.contains("cache_hit"), "{}", r.steps[4].diff);
    // The token request was recorded with its parameters and the flow's trace ID.
    let events = misim_core::events::list(&misim_proto::events::EventFilter {
        vm: "vm1".into(),
        operation: "/metadata/identity/oauth2/token".into(),
        ..Default::default()
    });
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].params["resource"],
        "https://management.azure.com/"
    );
    let aad = misim_core::events::list(&misim_proto::events::EventFilter {
        party: "aad".into(),
        operation: "/oauth2/".into(),
        ..Default::default()
    });
    assert!(aad
        .iter()
        .any(|e| e.params.get("client_assertion").map(String::as_str) == Some("[redacted]")));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_grpc_service_streams_each_step_and_the_verdict() {
    // `misim` steps run this binary (the test executable is not misim).
    std::env::set_var("MISIM_BIN", env!("CARGO_BIN_EXE_misim"));
    let running = misim::embedded::start(misim::embedded::EmbeddedConfig::default())
        .await
        .unwrap();
    let mut client = misim_proto::scenario::scenario_client::ScenarioClient::connect(
        running.endpoints.scenario_grpc.clone(),
    )
    .await
    .unwrap();
    let doc = "name: over grpc\nsteps:\n  - misim: group create -n rg9 -l westeurope\n    expect: {json: {name: rg9}}\n  - misim: group show -n nothing-here\n    expect: {exit_code: 0}\n";
    let mut stream = client
        .run(misim_proto::scenario::RunScenarioRequest {
            document: doc.into(),
            source_name: "grpc.yaml".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        got.push(m);
    }
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(got[0].passed && got[0].index == 1);
    assert!(
        !got[1].passed && got[1].diff.contains("exit_code"),
        "{:?}",
        got[1]
    );
    assert!(got[2].done && !got[2].passed && got[2].scenario == "over grpc");
    // A document that does not match the schema is refused with the line.
    let err = client
        .run(misim_proto::scenario::RunScenarioRequest {
            document: "name: x\nsteps:\n  - tokn: {}\n".into(),
            source_name: "bad.yaml".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("bad.yaml:3"), "{}", err.message());
    running.shutdown().await;
}
