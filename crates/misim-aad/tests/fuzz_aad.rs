//! Property-based fuzzing of Azure AD's HTTP surface (issue #15), over the wire against the real
//! server on a loopback port: token endpoint form bodies (v1 and v2), client assertions (malformed
//! JWTs, and well-signed JWTs with arbitrary headers and claims, so the claim checks run), tenant
//! path segments of the token, discovery and JWKS routes. Nothing panics or drops the connection, and
//! every rejection is Entra's body `{"error","error_description":"AADSTSn: …","error_codes":[n],
//! "timestamp","trace_id","correlation_id","error_uri"}`
//! (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow#error-response>).
//!
//! Cases per property: `PROPTEST_CASES` (proptest's default, 256). Long form:
//! `PROPTEST_CASES=100000 cargo test -p misim-aad --test fuzz_aad --release`.

mod common;
#[path = "../../misim-core/tests/support/fuzz.rs"]
mod fuzz;

use std::sync::OnceLock;

use base64::Engine;
use common::{ClientCert, T0, VM_ID};
use fuzz::mutate;
use jsonwebtoken::{Algorithm, Header};
use proptest::prelude::*;
use serde_json::{json, Value};

struct World {
    rt: tokio::runtime::Runtime,
    _aad: common::Aad,
    url: String,
    tenant: String,
    client_id: String,
    cert: ClientCert,
    http: reqwest::Client,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = fuzz::runtime();
        let dir = fuzz::data_dir();
        let cert = common::client_cert();
        let (aad, tenant, sp) = rt.block_on(async {
            let aad = common::start(dir, misim_core::Clock::manual(T0)).await;
            let (tenant, sp) = aad.principal(VM_ID, &cert).await;
            (aad, tenant, sp)
        });
        World {
            url: aad.http_url.clone(),
            _aad: aad,
            rt,
            tenant: tenant.tenant_id,
            client_id: sp.app_id,
            cert,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(std::time::Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    })
}

/// The assertion IMDS and MSAL send (RS256, `x5t`, aud = the token endpoint).
fn good_assertion(w: &World, v2: bool) -> String {
    let aud = format!(
        "{}/{}/oauth2/{}token",
        w.url,
        w.tenant,
        if v2 { "v2.0/" } else { "" }
    );
    common::imds_assertion(&w.cert, &w.client_id, &aud, T0)
}

/// Form bodies as the clients send them, `{A}` standing for a client assertion and `{C}` for the
/// client ID: IMDS (misim-imds aad_client.rs, v1 `resource`), MSAL Python's
/// `acquire_token_for_client` with a certificate (msal/oauth2cli/oauth2.py: `client_assertion_type`,
/// `client_assertion`, `grant_type`, `scope`, `client_info`), azure-identity's
/// `ClientAssertionCredential`/`WorkloadIdentityCredential` (the same through MSAL), the Azure CLI's
/// service-principal login (MSAL with a secret), and a refresh-token grant Entra refuses here.
const FORMS: &[&str] = &[
    "grant_type=client_credentials&client_id={C}&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={A}&resource=https%3A%2F%2Fmanagement.azure.com%2F",
    "client_id={C}&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={A}&grant_type=client_credentials&scope=https%3A%2F%2Fmanagement.azure.com%2F.default&client_info=1",
    "client_id={C}&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={A}&grant_type=client_credentials&scope=https%3A%2F%2Fvault.azure.net%2F.default+offline_access+openid+profile",
    "client_id={C}&grant_type=client_credentials&client_secret=c2VjcmV0&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default",
    "client_id={C}&grant_type=refresh_token&refresh_token=0.AAAA&scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
    "grant_type=client_credentials&client_id={C}&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={A}&resource=api%3A%2F%2FAzureADTokenExchange",
    "",
];

/// Characters edits insert: the delimiters of form bodies and JWTs.
const SPECIAL: &[char] = &['&', '=', '%', '+', '.', '-', '_', '/', 'A', '\u{0}', 'é'];

fn edits(max: usize) -> impl Strategy<Value = Vec<fuzz::Edit>> {
    fuzz::edits(SPECIAL, 0..max)
}

fn json_value() -> impl Strategy<Value = Value> {
    fuzz::json_value(
        &["RS256", "none", "HS256", "JWT"],
        &["alg", "x5t", "aud", "exp", "iss"],
    )
}

/// Entra's error body.
fn assert_entra_error(status: u16, v: &Value, what: &str) {
    let ok = v["error"].as_str().is_some_and(|e| !e.is_empty())
        && v["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("AADSTS"))
        && v["error_codes"]
            .as_array()
            .is_some_and(|c| !c.is_empty() && c.iter().all(Value::is_u64))
        && v["timestamp"].is_string()
        && v["trace_id"].is_string()
        && v["correlation_id"].is_string()
        && v["error_uri"].is_string();
    assert!(ok, "{what}: {status} is not Entra's error shape: {v}");
    assert!(
        (400..600).contains(&status) && status != 500,
        "{what}: status {status}: {v}"
    );
}

/// POSTs `body` to the token endpoint (`v2` or v1) of `tenant`; checks the answer.
fn post_token(tenant: &str, v2: bool, body: String, content_type: Option<&str>) -> (u16, Value) {
    let w = world();
    let url = format!(
        "{}/{tenant}/oauth2/{}token",
        w.url,
        if v2 { "v2.0/" } else { "" }
    );
    let Ok(url) = reqwest::Url::parse(&url) else {
        return (0, Value::Null);
    };
    let what = format!("POST {url} {body:?}");
    let mut req = w.http.post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let (status, text) = w.rt.block_on(async {
        let r = req.send().await.expect("Azure AD answers");
        let s = r.status().as_u16();
        (s, r.text().await.unwrap_or_default())
    });
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: {status} body is not JSON ({e}): {text:?}"));
    if status == 200 {
        assert!(v["access_token"].is_string(), "{what}: {v}");
    } else {
        assert_entra_error(status, &v, &what);
    }
    (status, v)
}

fn form(seed: &str, assertion: &str) -> String {
    seed.replace("{C}", &world().client_id)
        .replace("{A}", assertion)
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

#[test]
fn seed_corpus() {
    let w = world();
    // The real requests are accepted (the client-credentials ones), and the others refused properly.
    for (i, seed) in FORMS.iter().enumerate() {
        for v2 in [false, true] {
            let (status, v) = post_token(
                &w.tenant,
                v2,
                form(seed, &good_assertion(w, v2)),
                Some("application/x-www-form-urlencoded"),
            );
            if i <= 2 && (v2 == (i != 0)) {
                assert_eq!(status, 200, "seed {i} v2={v2}: {v}");
            }
        }
    }
    // Regression cases: bodies that are not forms, no content type, a JSON body.
    post_token(&w.tenant, true, "%zz=%".into(), None);
    post_token(
        &w.tenant,
        false,
        "{\"grant_type\":\"client_credentials\"}".into(),
        Some("application/json"),
    );
    post_token(
        "common",
        true,
        form(FORMS[1], &good_assertion(w, true)),
        None,
    );
    post_token("%00", false, String::new(), None);
    // Found by the long form: a tenant segment that does not percent-decode to UTF-8 was refused with
    // axum's plain-text "Invalid URL: Invalid UTF-8 in `tenant`".
    let (status, v) = post_token("%91", true, form(FORMS[1], &good_assertion(w, true)), None);
    assert_eq!((status, &v["error_codes"][0]), (400, &json!(90002)), "{v}");
    discovery("/5e1b5124%c8d0/.well-known/openid-configuration");
    discovery("/%8d/discovery/v2.0/keys");
}

fn discovery(path: &str) {
    let w = world();
    let Ok(url) = reqwest::Url::parse(&format!("{}{path}", w.url)) else {
        return;
    };
    let what = format!("GET {url}");
    let (status, text) = w.rt.block_on(async {
        let r = w.http.get(url).send().await.expect("Azure AD answers");
        let s = r.status().as_u16();
        (s, r.text().await.unwrap_or_default())
    });
    if status == 404 && text.is_empty() {
        return; // no such route (a mutation added a path segment): axum's 404, not a parser's answer
    }
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: {status} body is not JSON ({e}): {text:?}"));
    if status != 200 {
        assert_entra_error(status, &v, &what);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Mutated real form bodies with a valid assertion inside, v1 and v2, with and without the form
    /// content type.
    #[test]
    fn token_forms(i in 0..FORMS.len(), e in edits(6), v2 in any::<bool>(), ct in any::<bool>()) {
        let w = world();
        let body = mutate(&form(FORMS[i], &good_assertion(w, v2)), &e);
        post_token(&w.tenant, v2, body, ct.then_some("application/x-www-form-urlencoded"));
    }

    /// Arbitrary bytes as a body (lossy UTF-8 so it can be a string).
    #[test]
    fn token_raw(raw in proptest::collection::vec(any::<u8>(), 0..200), v2 in any::<bool>()) {
        post_token(&world().tenant, v2, String::from_utf8_lossy(&raw).into_owned(), None);
    }

    /// Malformed assertions: a good one with edits, random segment counts and base64 junk.
    #[test]
    fn assertion_text(e in edits(4), segs in proptest::collection::vec("[A-Za-z0-9_=+/-]{0,40}", 0..5), pick in any::<bool>()) {
        let w = world();
        let a = if pick { mutate(&good_assertion(w, true), &e) } else { segs.join(".") };
        let body = form(FORMS[1], &urlencode(&a));
        post_token(&w.tenant, true, body, None);
    }

    /// Well-signed assertions with arbitrary headers and claims: every claim check runs.
    #[test]
    fn assertion_claims(
        aud in prop_oneof![Just(0u8), Just(1), Just(2)],
        iss_sub in prop_oneof![Just(0u8), Just(1), Just(2)],
        jti in proptest::option::of(".{0,8}"),
        nbf in proptest::option::of(any::<i64>()), iat in proptest::option::of(any::<i64>()), exp in proptest::option::of(any::<i64>()),
        near in any::<bool>(),
        extra in json_value(),
        x5t in prop_oneof![Just(0u8), Just(1), Just(2), Just(3)],
        alg in prop_oneof![Just(Algorithm::RS256), Just(Algorithm::RS384), Just(Algorithm::PS256)],
    ) {
        let w = world();
        let v2_aud = format!("{}/{}/oauth2/v2.0/token", w.url, w.tenant);
        let mut claims = json!({ "extra": extra });
        match aud {
            0 => claims["aud"] = json!(v2_aud),
            1 => claims["aud"] = json!([v2_aud, "x"]),
            _ => claims["aud"] = json!(12),
        }
        match iss_sub {
            0 => { claims["iss"] = json!(w.client_id); claims["sub"] = json!(w.client_id); }
            1 => { claims["iss"] = json!(w.client_id); claims["sub"] = json!("someone"); }
            _ => { claims["iss"] = json!(null); }
        }
        if let Some(j) = jti { claims["jti"] = json!(j); }
        let t = |x: Option<i64>, d: i64| x.map(|v| if near { T0 + (v % 1200) } else { v }).unwrap_or(T0 + d);
        if nbf.is_some() || near { claims["nbf"] = json!(t(nbf, 0)); }
        if iat.is_some() || near { claims["iat"] = json!(t(iat, 0)); }
        if exp.is_some() || near { claims["exp"] = json!(t(exp, 600)); }
        let mut header = Header::new(alg);
        match x5t {
            0 => header.x5t = Some(misim_core::cert::x5t(&w.cert.cert_der)),
            1 => header.x5t = Some("AAAA".into()),
            2 => header.x5t_s256 = Some(b64(b"not a thumbprint")),
            _ => header.kid = Some("k".into()),
        }
        let a = common::sign(&w.cert, &header, &claims);
        post_token(&w.tenant, true, form(FORMS[1], &a), None);
    }

    /// Hand-built JWTs: arbitrary header and payload JSON (or not JSON), a junk signature.
    #[test]
    fn assertion_structure(h in json_value(), p in json_value(), sig in proptest::collection::vec(any::<u8>(), 0..16)) {
        let a = format!("{}.{}.{}", b64(h.to_string().as_bytes()), b64(p.to_string().as_bytes()), b64(&sig));
        post_token(&world().tenant, false, form(FORMS[0], &a), None);
    }

    /// Tenant segments of the token, discovery and JWKS routes.
    #[test]
    fn tenants(e in edits(5), which in 0usize..4, alias in prop_oneof![Just("common"), Just("organizations"), Just("consumers"), Just("")]) {
        let w = world();
        let seed = if which == 0 { alias.to_string() } else { w.tenant.clone() };
        // One segment: no separators (URL parsers read `\\` as `/` in http URLs).
        let t = mutate(&seed, &e).replace(['/', '\\', '?', '#'], "");
        // Not a tenant segment once the URL is normalised (empty, `.`, `..`, also as `%2e`): another route.
        let dots = t.to_ascii_lowercase().replace("%2e", ".");
        if t.is_empty() || dots == "." || dots == ".." {
            return Ok(());
        }
        match which {
            0 | 1 => discovery(&format!("/{t}/.well-known/openid-configuration")),
            2 => discovery(&format!("/{t}/discovery/v2.0/keys")),
            _ => { post_token(&t, true, form(FORMS[1], &good_assertion(w, true)), None); }
        }
    }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("x", s)]).unwrap_or_default()[2..].to_string()
}
