//! Property-based fuzzing of ARM's REST parsers and handler (issue #15): request paths
//! ([`rest::path`]), query strings ([`rest::query`]: `api-version`, `$filter`, `$top`/`$skiptoken`),
//! JSON bodies ([`rest::body`]: the identity block, tags, `sku.capacity`), and the REST router itself
//! on a loopback listener (any method, path, query, `Authorization` header and body). Nothing panics,
//! and every rejection is ARM's `{"error":{"code","message"}}` with a 4xx/5xx status.
//!
//! Cases per property: `PROPTEST_CASES` (proptest's default, 256). Long form:
//! `PROPTEST_CASES=100000 cargo test -p misim-arm --test fuzz_arm --release`.
//! Authenticated requests (past the bearer check) are fuzzed against the whole system in
//! tests/tests/fuzz_arm_rest.rs (crate misim-tests).

use std::sync::{Arc, OnceLock};

#[path = "../../misim-core/tests/support/fuzz.rs"]
mod fuzz;

use fuzz::mutate;
use misim_arm::rest::{body, path, query};
use misim_core::Clock;
use proptest::prelude::*;
use serde_json::Value;

const SUB: &str = "00000000-0000-0000-0000-000000000001";

/// Paths the Azure SDKs and the CLI request (azure-mgmt-compute `virtual_machines.get/create_or_update`,
/// azure-mgmt-msi `user_assigned_identities`, azure-mgmt-authorization `role_assignments.list_for_scope`,
/// azure-mgmt-resource `resource_groups`, `az vm identity assign`, `az role assignment create`,
/// azure-mgmt-keyvault, azure-mgmt-web, azure-mgmt-containerservice).
const PATHS: &[&str] = &[
    "/subscriptions/00000000-0000-0000-0000-000000000001",
    "/subscriptions",
    "/tenants",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1/instanceView",
    "/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Compute/virtualMachines",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1/virtualMachines/0",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1/federatedIdentityCredentials/fic1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1/providers/Microsoft.ManagedIdentity/identities/default",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Authorization/roleAssignments",
    "/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Authorization/roleAssignments/1b5d6c9e-1f6e-4b1e-9d7c-0b8a5f0c0a11",
    "/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Authorization/roleDefinitions",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Authorization/permissions",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Web/sites/app1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.ContainerService/managedClusters/aks1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Compute/locations/westeurope/operations/abc",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resources",
    "/subscriptions/00000000-0000-0000-0000-000000000001/locations",
    "/metadata/endpoints",
    "/vaults/kv1/secrets/s1",
    "/healthz",
];

/// Query strings as the SDKs send them.
const QUERIES: &[&str] = &[
    "api-version=2023-03-01",
    "api-version=2022-04-01&$filter=atScope()",
    "api-version=2022-04-01&$filter=assignedTo('8ba4d3f5-4a55-4a6e-9a3b-0f4ad0d8b51e')",
    "$filter=principalId%20eq%20%278ba4d3f5-4a55-4a6e-9a3b-0f4ad0d8b51e%27&api-version=2022-04-01",
    "$filter=atScope()+and+assignedTo('x')&api-version=2022-04-01",
    "api-version=2021-04-01&$top=1",
    "api-version=2021-04-01&$top=1&$skiptoken=1",
    "api-version=2023-01-31-preview",
    "api-version=2019-08-01",
    "",
];

/// Bodies as the SDKs send them (azure-mgmt-compute `VirtualMachine` with `identity`, `az vm identity
/// assign`'s PATCH, azure-mgmt-msi, azure-mgmt-authorization `RoleAssignmentCreateParameters`,
/// azure-mgmt-compute scale set `sku`).
const BODIES: &[&str] = &[
    r#"{"location":"westeurope","tags":{"env":"ci"}}"#,
    r#"{"identity":{"type":"SystemAssigned"}}"#,
    r#"{"identity":{"type":"SystemAssigned, UserAssigned","userAssignedIdentities":{"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1":{}}}}"#,
    r#"{"identity":{"type":"UserAssigned","userAssignedIdentities":{"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1":null}}}"#,
    r#"{"identity":{"type":"None"}}"#,
    r#"{"location":"westeurope","sku":{"name":"Standard_D2s_v3","capacity":2},"identity":{"type":"SystemAssigned"}}"#,
    r#"{"properties":{"roleDefinitionId":"/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7","principalId":"8ba4d3f5-4a55-4a6e-9a3b-0f4ad0d8b51e","principalType":"ServicePrincipal"}}"#,
    r#"{"properties":{"issuer":"https://oidc.example/","subject":"system:serviceaccount:default:sa","audiences":["api://AzureADTokenExchange"]}}"#,
    "",
    "{}",
];

/// Characters edits insert: the delimiters of paths, queries and JSON.
const SPECIAL: &[char] = &[
    '/', '%', '&', '=', '\'', '"', '{', '}', '[', ':', ',', '+', 'é', '\u{0}', '0', '5', '9',
];

fn edits() -> impl Strategy<Value = Vec<fuzz::Edit>> {
    fuzz::edits(SPECIAL, 1..6)
}

fn json_value() -> impl Strategy<Value = Value> {
    fuzz::json_value(
        &[
            "SystemAssigned",
            "UserAssigned",
            "None",
            "SystemAssigned, UserAssigned",
            "systemassigned,userassigned",
        ],
        &["type", "userAssignedIdentities", "capacity"],
    )
}

/// ARM's error shape: `{"error":{"code":"…","message":"…"}}`.
fn assert_arm_error(v: &Value, what: &str) {
    let code = v.pointer("/error/code").and_then(Value::as_str);
    let message = v.pointer("/error/message").and_then(Value::as_str);
    assert!(
        code.is_some_and(|c| !c.is_empty()) && message.is_some(),
        "{what}: not ARM's error shape: {v}"
    );
}

fn check_arm_error(e: &misim_arm::ArmError, what: &str) {
    let status = e.http_status();
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{what}: {status}"
    );
    assert_arm_error(&e.body(), what);
}

fn check_path(p: &str) {
    if let Ok(t) = path::parse_detailed(p) {
        let _ = t.subscription();
    }
    let _ = path::parse(p);
}

fn check_query(q: &str) {
    let _ = query::pairs(q);
    let _ = query::param(q, "api-version");
    let _ = query::param(q, "$filter");
    if let Ok(clauses) = query::filter(q) {
        let _ = query::eq(&clauses, "principalId");
    }
    let items: Vec<Value> = (0..5).map(|i| serde_json::json!({ "i": i })).collect();
    if let Ok(page) = query::page(
        items,
        "http://127.0.0.1:1",
        "/subscriptions/x/resourcegroups",
        q,
    ) {
        assert!(page["value"].is_array(), "{q:?}: {page}");
        if let Some(next) = page.get("nextLink") {
            assert!(
                next.as_str()
                    .is_some_and(|n| n.starts_with("http://127.0.0.1:1/")),
                "{next}"
            );
        }
    }
}

fn check_body(b: &[u8]) {
    match body::parse(b) {
        Err(e) => check_arm_error(&e, "body::parse"),
        Ok(v) => {
            assert!(v.is_object());
            if let Err(e) = body::identity(&v) {
                check_arm_error(&e, "body::identity");
            }
            if let Err(e) = body::capacity(&v) {
                check_arm_error(&e, "body::capacity");
            }
            let _ = body::tags(&v);
            let _ = body::location(&v);
        }
    }
}

#[test]
fn seed_corpus() {
    for p in PATHS {
        check_path(p);
    }
    for q in QUERIES {
        check_query(q);
    }
    for b in BODIES {
        check_body(b.as_bytes());
    }
    // Regression cases: multi-byte UTF-8 where a fixed-width prefix is compared.
    for p in [
        "/vaultsé/x",
        "/vé",
        "/subscriptions/é/resourceGroups/é/providers/é",
    ] {
        check_path(p);
    }
}

// --- The REST router on a loopback listener ------------------------------------------------------

struct Server {
    rt: tokio::runtime::Runtime,
    url: String,
    http: reqwest::Client,
}

/// ARM with unreachable peers (nothing here gets past the bearer check, or needs them), serving the
/// real REST router on 127.0.0.1:0.
fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let rt = fuzz::runtime();
        let dir = fuzz::data_dir();
        let url = rt.block_on(async {
            let clock = Clock::manual(1_800_000_000);
            let dead = "http://127.0.0.1:9".to_string();
            let config = misim_arm::Config {
                data_dir: dir.join("arm"),
                msrp_grpc: dead.clone(),
                aad_grpc: dead.clone(),
                aad_url: dead.clone(),
                hosts: vec![misim_arm::HostEndpoint {
                    name: "host-1".into(),
                    agent_grpc: dead.clone(),
                }],
                clock: clock.clone(),
                control: None,
                api_token: None,
                public_rest_url: None,
            };
            let arm = misim_arm::build(&config).unwrap();
            let validator = misim_arm::rest::auth::TokenValidator::new(&dead, clock).unwrap();
            let router = misim_arm::rest::router(misim_arm::rest::RestState {
                arm,
                validator: Arc::new(validator),
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(misim_core::serve::serve_http(
                listener,
                router,
                tokio_util::sync::CancellationToken::new(),
            ));
            url
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .unwrap();
        Server { rt, url, http }
    })
}

/// Sends one request; checks the answer's shape. Paths and queries that are not valid in a URL
/// (spaces, control characters) are percent-encoded by the client, as an SDK would.
fn check_request(method: &str, p: &str, q: &str, auth: Option<&str>, b: &[u8]) {
    let s = server();
    let mut target = format!(
        "{}{}",
        s.url,
        if p.starts_with('/') {
            p.to_string()
        } else {
            format!("/{p}")
        }
    );
    if !q.is_empty() {
        target.push('?');
        target.push_str(q);
    }
    let Ok(url) = reqwest::Url::parse(&target) else {
        return;
    };
    if url.host_str() != Some("127.0.0.1") {
        return; // a mutation that moved the authority: not a request to ARM
    }
    let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let mut req = s.http.request(m, url).body(b.to_vec());
    if let Some(a) = auth {
        let Ok(v) = reqwest::header::HeaderValue::from_str(a) else {
            return;
        };
        req = req.header("authorization", v);
    }
    let (status, text) = s.rt.block_on(async {
        let r = req
            .send()
            .await
            .expect("ARM answers (no panic, no dropped connection)");
        let status = r.status();
        (status, r.text().await.unwrap_or_default())
    });
    assert!(
        !status.is_server_error() || status.as_u16() == 503,
        "{method} {target}: {status} {text}"
    );
    if (status.is_client_error() || status.is_server_error()) && method != "HEAD" {
        if status.as_u16() == 405 && text.is_empty() {
            return;
        }
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {target}: {status} body is not JSON ({e}): {text:?}")
        });
        assert_arm_error(&v, &format!("{method} {target} -> {status}"));
    }
}

/// Authorization headers as clients send them, and broken ones.
const AUTHS: &[&str] = &[
    "Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQuYXp1cmUuY29tLyJ9.c2ln",
    "Bearer ",
    "Bearer a.b.c",
    "Basic dXNlcjpwYXNz",
    "bearer x",
];

proptest! {
    // Cases from PROPTEST_CASES (ProptestConfig::default reads it); failures are kept as explicit
    // regression tests above rather than in proptest-regressions files.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn paths_arbitrary(p in any::<String>()) {
        check_path(&p);
    }

    #[test]
    fn paths_mutated(i in 0..PATHS.len(), e in edits()) {
        check_path(&mutate(PATHS[i], &e));
    }

    #[test]
    fn queries(i in 0..QUERIES.len(), e in edits(), raw in any::<String>()) {
        check_query(&mutate(QUERIES[i], &e));
        check_query(&raw);
    }

    #[test]
    fn bodies(i in 0..BODIES.len(), e in edits(), raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        check_body(mutate(BODIES[i], &e).as_bytes());
        check_body(&raw);
    }

    #[test]
    fn json_values(v in json_value()) {
        // Any JSON object as a body: every field where the identity block, tags or sku are read.
        let body = serde_json::json!({ "identity": v.clone(), "tags": v.clone(), "sku": { "capacity": v.clone() }, "location": v });
        check_body(body.to_string().as_bytes());
    }

    #[test]
    fn router(
        method in prop_oneof![Just("GET"), Just("PUT"), Just("PATCH"), Just("DELETE"), Just("POST"), Just("HEAD"), Just("OPTIONS")],
        i in 0..PATHS.len(), pe in edits(),
        j in 0..QUERIES.len(), qe in fuzz::edits(SPECIAL, 0..3),
        a in proptest::option::of(0..AUTHS.len()),
        k in 0..BODIES.len(), be in fuzz::edits(SPECIAL, 0..3),
    ) {
        let p = mutate(PATHS[i], &pe).replace(SUB, &SUB.replace('1', "2"));
        check_request(method, &p, &mutate(QUERIES[j], &qe), a.map(|a| AUTHS[a]), mutate(BODIES[k], &be).as_bytes());
    }
}
