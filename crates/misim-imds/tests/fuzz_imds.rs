//! Property-based fuzzing of IMDS's HTTP surface (issue #15), over the wire against a real host on
//! loopback (fake MSRP and Azure AD, as in tests/host): query strings and headers of
//! `/metadata/identity/oauth2/token`, `/metadata/identity/info`, `/metadata/instance[/…]`,
//! `/metadata/versions` and unknown paths, on a VM with a system-assigned and a user-assigned
//! identity. Nothing panics or drops the connection; every answer is JSON, and every rejection is
//! IMDS's shape: `{"error","error_description"}` on the identity category, `{"error":"Bad request. …"}`
//! on the instance category
//! (<https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service#errors-and-debugging>,
//! <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token#error-handling>).
//!
//! Cases per property: `PROPTEST_CASES` (proptest's default, 256). Long form:
//! `PROPTEST_CASES=100000 cargo test -p misim-imds --test fuzz_imds --release` (throttling is off).

#[path = "host/fakes.rs"]
#[allow(dead_code, missing_docs)]
mod fakes;
#[path = "../../misim-core/tests/support/fuzz.rs"]
mod fuzz;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use fakes::{FakeAad, FakeMsrp, TestIdentity};
use fuzz::mutate;
use misim_core::{serve, Clock};
use misim_imds::{Config, ImdsLimits};
use misim_proto::imds as pb;
use misim_proto::imds::host_agent_client::HostAgentClient;
use misim_proto::msrp::msrp_server::MsrpServer;
use proptest::prelude::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const SUB: &str = "00000000-0000-0000-0000-00000000a001";
const TENANT: &str = "00000000-0000-0000-0000-00000000b001";
const START: i64 = 1_800_000_000;
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct World {
    rt: tokio::runtime::Runtime,
    imds: String,
    system: TestIdentity,
    user: TestIdentity,
    http: reqwest::Client,
}

fn vm_id() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"
    )
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = fuzz::runtime();
        let dir = fuzz::data_dir();
        let system = TestIdentity {
            resource_id: vm_id(),
            system: true,
            client_id: "11111111-1111-1111-1111-111111111111".into(),
            principal_id: "22222222-2222-2222-2222-222222222222".into(),
            tenant_id: TENANT.into(),
        };
        let user = TestIdentity {
            resource_id: format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"),
            system: false,
            client_id: "33333333-3333-3333-3333-333333333333".into(),
            principal_id: "44444444-4444-4444-4444-444444444444".into(),
            tenant_id: TENANT.into(),
        };
        let imds = rt.block_on(async {
            let clock = Clock::manual(START);
            let stop = Box::leak(Box::new(CancellationToken::new()));
            let msrp = FakeMsrp::default();
            let l = serve::bind(SocketAddr::new(LOCALHOST, 0)).await.unwrap();
            let msrp_url = format!("http://{}", l.local_addr().unwrap());
            tokio::spawn(serve::serve_grpc(l, tonic::service::Routes::new(MsrpServer::new(msrp.clone())), &[], stop.clone()));
            let aad = FakeAad::new(clock.clone());
            let l = serve::bind(SocketAddr::new(LOCALHOST, 0)).await.unwrap();
            let aad_url = format!("http://{}", l.local_addr().unwrap());
            aad.base_url.set(aad_url.clone()).unwrap();
            tokio::spawn(serve::serve_http(l, aad.router(), stop.clone()));
            let mut config = Config::new("host-1".into(), dir.join("host-1"), msrp_url, aad_url, LOCALHOST, clock.clone());
            config.limits = ImdsLimits::unlimited();
            config.credential_refresh_secs = 0;
            let l = serve::bind(SocketAddr::new(LOCALHOST, 0)).await.unwrap();
            let agent_url = format!("http://{}", l.local_addr().unwrap());
            tokio::spawn(misim_imds::run(config, l, stop.clone()));
            let mut agent = HostAgentClient::new(Channel::from_shared(agent_url).unwrap().connect_lazy());
            let mut tries = 0;
            while agent.list_vms(pb::ListVmsRequest {}).await.is_err() {
                tries += 1;
                assert!(tries < 200, "host agent not ready");
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            let placed = agent
                .place_vm(pb::PlaceVmRequest {
                    vm: Some(pb::VmInfo {
                        resource_id: vm_id(),
                        vm_id: "11111111-0000-0000-0000-000000000003".into(),
                        name: "vm1".into(),
                        subscription_id: SUB.into(),
                        resource_group: "rg1".into(),
                        location: "westeurope".into(),
                        vm_size: "Standard_D2s_v3".into(),
                        os_type: "Linux".into(),
                        vm_scale_set_name: String::new(),
                        tags: [("env".to_string(), "ci".to_string())].into(),
                        private_ip_address: "10.0.0.4".into(),
                        mac_address: "000D3AF806EC".into(),
                    }),
                    app_service: None,
                })
                .await
                .unwrap()
                .into_inner();
            let mut refs = Vec::new();
            for i in [&system, &user] {
                let der = msrp.issue(i, clock.now());
                aad.register(&i.client_id, der);
                refs.push(pb::IdentityRef {
                    msi_res_id: i.resource_id.clone(),
                    kind: if i.system { pb::IdentityKind::SystemAssigned } else { pb::IdentityKind::UserAssigned } as i32,
                    client_id: i.client_id.clone(),
                    principal_id: i.principal_id.clone(),
                    tenant_id: i.tenant_id.clone(),
                });
            }
            agent
                .configure_identities(pb::ConfigureIdentitiesRequest { resource_id: vm_id(), identities: refs })
                .await
                .unwrap();
            // Leak the fakes with the runtime: they serve until the test process exits.
            Box::leak(Box::new((msrp, aad)));
            placed.imds_endpoint
        });
        World {
            rt,
            imds,
            system,
            user,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(std::time::Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    })
}

/// Requests as the clients send them (`{U}`: the user-assigned identity's client ID, `{R}`: its
/// resource ID): azure-identity's `ImdsCredential` (azure/identity/_credentials/imds.py:
/// api-version 2018-02-01, `resource`, `client_id`/`object_id`/`msi_res_id`), MSAL Python's
/// `ManagedIdentityClient` (msal/managed_identity.py `_obtain_token_on_azure_vm`: api-version
/// 2018-02-01, `resource`, `client_id`/`object_id`/`mi_res_id`), the Azure CLI's `az login
/// --identity` (through MSAL), the Rust azure_identity crate (api-version 2019-08-01) and the
/// instance metadata calls of the IMDS doc.
const REQUESTS: &[&str] = &[
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F",
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net&client_id={U}",
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F&msi_res_id={R}",
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com&mi_res_id={R}",
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F&object_id=44444444-4444-4444-4444-444444444444",
    "/metadata/identity/oauth2/token?api-version=2019-08-01&resource=https%3A%2F%2Fmanagement.azure.com%2F&bypass_cache=true",
    "/metadata/identity/oauth2/token?resource=https://management.azure.com/&api-version=2018-02-01&client_id={U}&token_type=pop",
    "/metadata/identity/info?api-version=2018-02-01",
    "/metadata/instance?api-version=2021-02-01",
    "/metadata/instance/compute?api-version=2021-02-01",
    "/metadata/instance/compute/vmId?api-version=2017-08-01&format=text",
    "/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress?api-version=2017-08-01&format=text",
    "/metadata/versions",
    "/metadata/identity/oauth2/token",
    "/metadata/scheduledevents?api-version=2020-07-01",
];

fn fill(seed: &str) -> String {
    let w = world();
    seed.replace("{U}", &w.user.client_id)
        .replace("{R}", &w.user.resource_id)
}

/// Characters edits insert: the delimiters of paths and queries.
const SPECIAL: &[char] = &['&', '=', '%', '+', '/', '?', ';', '0', '\u{0}', 'é'];

fn edits(max: usize) -> impl Strategy<Value = Vec<fuzz::Edit>> {
    fuzz::edits(SPECIAL, 0..max)
}

/// Sends `GET path_and_query` with `headers`; checks the answer. Returns the status (0: not a URL).
fn get(method: &str, path_and_query: &str, headers: &[(String, String)]) -> u16 {
    let w = world();
    let target = format!(
        "{}{}",
        w.imds,
        if path_and_query.starts_with('/') {
            path_and_query.to_string()
        } else {
            format!("/{path_and_query}")
        }
    );
    let Ok(url) = reqwest::Url::parse(&target) else {
        return 0;
    };
    if url.host_str() != Some("127.0.0.1") {
        return 0;
    }
    let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return 0;
    };
    let mut req = w.http.request(m, url.clone());
    for (k, v) in headers {
        let (Ok(k), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
            reqwest::header::HeaderValue::from_str(v),
        ) else {
            return 0;
        };
        req = req.header(k, v);
    }
    let what = format!("{method} {url} {headers:?}");
    let (status, text) = w.rt.block_on(async {
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: IMDS does not answer: {e}"));
        let s = r.status().as_u16();
        (s, r.text().await.unwrap_or_default())
    });
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("{what} -> {status} {text}");
    }
    if method == "HEAD" {
        return status;
    }
    let text_leaf = url.query().is_some_and(|q| q.contains("format=text")) && status == 200;
    if text_leaf {
        return status;
    }
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: {status} body is not JSON ({e}): {text:?}"));
    if status == 200 {
        return status;
    }
    assert!(
        status != 500 || v["error"] == "unknown",
        "{what}: {status} {v}"
    );
    let error = v["error"].as_str();
    assert!(
        error.is_some_and(|e| !e.is_empty()),
        "{what}: {status}: no \"error\" string: {v}"
    );
    let identity = url
        .path()
        .to_ascii_lowercase()
        .starts_with("/metadata/identity");
    if identity && status != 404 {
        assert!(
            v["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{what}: {status}: identity category without error_description: {v}"
        );
    }
    status
}

fn metadata_header() -> Vec<(String, String)> {
    vec![("Metadata".into(), "true".into())]
}

#[test]
fn seed_corpus() {
    for r in REQUESTS {
        get("GET", &fill(r), &metadata_header());
        get("GET", &fill(r), &[]);
    }
    // The clients' real requests succeed.
    for i in [0, 1, 2, 4, 5] {
        let r = REQUESTS[i];
        assert_eq!(get("GET", &fill(r), &metadata_header()), 200, "{r}");
    }
    assert_eq!(get("GET", &fill(REQUESTS[8]), &metadata_header()), 200);
    // Regression cases: duplicate parameters, a repeated Metadata header, X-Forwarded-For, a POST.
    get(
        "GET",
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=a&resource=b",
        &metadata_header(),
    );
    get(
        "GET",
        &fill(REQUESTS[0]),
        &[
            ("Metadata".into(), "true".into()),
            ("Metadata".into(), "true".into()),
        ],
    );
    get(
        "GET",
        &fill(REQUESTS[0]),
        &[
            ("Metadata".into(), "true".into()),
            ("X-Forwarded-For".into(), "10.0.0.1".into()),
        ],
    );
    get("POST", &fill(REQUESTS[0]), &metadata_header());
    get(
        "GET",
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=%ff%fe",
        &metadata_header(),
    );
}

fn header_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("Metadata".to_string()),
        Just("metadata".to_string()),
        Just("X-Forwarded-For".to_string()),
        Just("Accept".to_string()),
        Just("X-IDENTITY-HEADER".to_string()),
        "[A-Za-z-]{1,12}",
    ];
    let value = prop_oneof![
        Just("true".to_string()),
        Just(" true ".to_string()),
        Just("True".to_string()),
        Just("false".to_string()),
        Just(String::new()),
        "[ -~]{0,16}",
    ];
    proptest::collection::vec((name, value), 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Mutated real requests with the Metadata header.
    #[test]
    fn queries(i in 0..REQUESTS.len(), e in edits(6)) {
        get("GET", &mutate(&fill(REQUESTS[i]), &e), &metadata_header());
    }

    /// Real requests with arbitrary header sets and methods.
    #[test]
    fn headers(i in 0..REQUESTS.len(), h in header_strategy(), method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE"), Just("OPTIONS")]) {
        get(method, &fill(REQUESTS[i]), &h);
    }

    /// Token requests built from parameters: known names with arbitrary values, repeated, in any order.
    #[test]
    fn token_params(params in proptest::collection::vec((
        prop_oneof![Just("api-version"), Just("resource"), Just("client_id"), Just("object_id"), Just("msi_res_id"), Just("mi_res_id"), Just("principal_id"), Just("bypass_cache"), Just("token_type"), Just("x")],
        prop_oneof![Just("2018-02-01".to_string()), Just("https://management.azure.com/".to_string()), Just(world().user.client_id.clone()), Just(world().system.principal_id.clone()), Just(world().user.resource_id.clone()), Just(String::new()), ".{0,12}"],
    ), 0..6)) {
        let q: String = serde_urlencoded::to_string(&params).unwrap_or_default();
        get("GET", &format!("/metadata/identity/oauth2/token?{q}"), &metadata_header());
    }

    /// Arbitrary paths and queries.
    #[test]
    fn raw(p in "/[ -~]{0,40}") {
        get("GET", &p, &metadata_header());
    }
}
