//! The managed-identity claim set in v1 and v2 access tokens, claim by claim, and every first-party
//! resource in every form SDKs send it, with the `aud` Entra writes for that form.
//!
//! Claim shapes follow Microsoft's access-token claims reference
//! (<https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference>), its sample
//! app token (<https://learn.microsoft.com/entra/agent-id/identity-platform/agent-token-claims>)
//! and a real VM managed-identity token (see docs/azure-ad.md, "Claims").

mod common;

use std::collections::BTreeSet;

use base64::Engine;
use common::*;
use misim_aad::resources::{FirstPartyResource, FIRST_PARTY};
use misim_core::Clock;
use serde_json::Value;

const ARM_APP_ID: &str = "797f4846-ba00-4fd7-ba43-dac1f8f63013";
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// The claims every managed-identity token carries besides the version's client claims.
const COMMON: &[&str] = &[
    "aud",
    "iss",
    "iat",
    "nbf",
    "exp",
    "aio",
    "idp",
    "idtyp",
    "oid",
    "rh",
    "sub",
    "tid",
    "uti",
    "ver",
    "xms_act_fct",
    "xms_ftd",
    "xms_idrel",
    "xms_mirid",
    "xms_rd",
    "xms_sub_fct",
    "xms_tcdt",
];

fn names(claims: &Value) -> BTreeSet<String> {
    claims.as_object().unwrap().keys().cloned().collect()
}

fn expected_names(client_claims: [&str; 2]) -> BTreeSet<String> {
    COMMON
        .iter()
        .chain(client_claims.iter())
        .map(|s| s.to_string())
        .collect()
}

/// The payload of a token, without verifying it (the resource sweep verifies one per resource).
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// Asserts the opaque and `xms_*` claims' shapes, shared by v1 and v2, and returns the two GUIDs
/// `rh` packs (tenant, resource application).
fn assert_opaque_and_xms_shapes(c: &Value, tenant_created: i64) -> (String, String) {
    let aio = c["aio"].as_str().unwrap();
    assert_eq!(aio.len(), 140, "aio is ~140 chars: {aio}");
    assert!(
        base64::engine::general_purpose::STANDARD
            .decode(aio)
            .is_ok(),
        "aio is standard base64: {aio}"
    );
    let uti = c["uti"].as_str().unwrap();
    assert_eq!(uti.len(), 22, "{uti}");
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(uti)
            .unwrap()
            .len(),
        16
    );
    let rh = c["rh"].as_str().unwrap();
    let body = rh
        .strip_prefix("1.")
        .and_then(|b| b.strip_suffix('.'))
        .unwrap_or_else(|| panic!("rh is 1.<base64url>.: {rh}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .unwrap();
    assert_eq!(bytes.len(), 40);
    let rh_tid = uuid::Uuid::from_slice_le(&bytes[3..19])
        .unwrap()
        .to_string();
    let rh_app = uuid::Uuid::from_slice_le(&bytes[19..35])
        .unwrap()
        .to_string();
    // The tenant's creation time, but never after the back-dated iat (a tenant made just now).
    assert_eq!(
        c["xms_tcdt"].as_i64(),
        Some(tenant_created.min(c["iat"].as_i64().unwrap())),
        "integer"
    );
    assert!(c["xms_rd"].as_str().unwrap().starts_with("0.42Lj"));
    let ftd = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c["xms_ftd"].as_str().unwrap())
        .unwrap();
    assert!(
        ftd.len() > 32 && ftd[32] == 0x01,
        "xms_ftd: 32 bytes, 0x01, region"
    );
    let idrel: Vec<&str> = c["xms_idrel"].as_str().unwrap().split(' ').collect();
    assert_eq!(idrel.len(), 2);
    assert_eq!(idrel[0], "7");
    assert!(idrel[1].parse::<u32>().is_ok());
    assert_eq!(c["xms_act_fct"], "3 9");
    assert_eq!(c["xms_sub_fct"], "9 3");
    assert_eq!(c["idtyp"], "app");
    (rh_tid, rh_app)
}

#[tokio::test]
async fn v1_token_carries_the_managed_identity_claim_set_in_entras_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let cert = client_cert();
    let vm = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/Default-RG/\
              providers/Microsoft.Compute/virtualMachines/It-VM";
    let (tenant, sp) = aad.principal(vm, &cert).await;
    // The tenant was created at T0; tokens issued later still carry its creation time.
    aad.clock.advance(3600);
    let (tid, cid) = (tenant.tenant_id.as_str(), sp.app_id.as_str());
    let assertion = imds_assertion(
        &cert,
        cid,
        &format!("{}/{tid}/oauth2/token", aad.http_url),
        T0 + 3600,
    );
    let resource = "https://management.azure.com/";
    let (status, body) = aad
        .post_form(
            &format!("/{tid}/oauth2/token"),
            &v1_form(cid, &assertion, resource),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, c) = verify_via_discovery(
        &aad,
        &format!("/{tid}/.well-known/openid-configuration"),
        body["access_token"].as_str().unwrap(),
        resource,
    )
    .await;
    assert_eq!(names(&c), expected_names(["appid", "appidacr"]), "{c}");
    assert_eq!(c["aud"], resource, "v1 aud is the resource as requested");
    assert_eq!(c["ver"], "1.0");
    assert_eq!(c["iss"], format!("https://sts.windows.net/{tid}/"));
    assert_eq!(
        (c["appid"].as_str(), c["appidacr"].as_str()),
        (Some(cid), Some("2"))
    );
    assert_eq!(
        c["xms_mirid"],
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/Default-RG/\
         providers/Microsoft.Compute/virtualMachines/It-VM",
        "resourcegroups in lower case, everything else as created"
    );
    let (rh_tid, rh_app) = assert_opaque_and_xms_shapes(&c, T0);
    assert_eq!((rh_tid.as_str(), rh_app.as_str()), (tid, ARM_APP_ID));

    // Opaque claims differ from token to token.
    let assertion = imds_assertion(
        &cert,
        cid,
        &format!("{}/{tid}/oauth2/token", aad.http_url),
        T0 + 3600,
    );
    let (_, again) = aad
        .post_form(
            &format!("/{tid}/oauth2/token"),
            &v1_form(cid, &assertion, resource),
        )
        .await;
    let c2 = payload(again["access_token"].as_str().unwrap());
    for claim in ["aio", "uti", "xms_rd", "xms_ftd"] {
        assert_ne!(c[claim], c2[claim], "{claim}");
    }
    aad.stop().await;
}

#[tokio::test]
async fn v2_token_carries_the_same_set_with_azp_azpacr_and_the_resource_app_id() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let cert = client_cert();
    let (tenant, sp) = aad.principal(UAMI_ID, &cert).await;
    let (tid, cid) = (tenant.tenant_id.as_str(), sp.app_id.as_str());
    let assertion = imds_assertion(
        &cert,
        cid,
        &format!("{}/{tid}/oauth2/v2.0/token", aad.http_url),
        T0,
    );
    let (status, body) = aad
        .post_form(
            &format!("/{tid}/oauth2/v2.0/token"),
            &v2_form(cid, &assertion, "https://graph.microsoft.com/.default"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (header, c) = verify_via_discovery(
        &aad,
        &format!("/{tid}/v2.0/.well-known/openid-configuration"),
        body["access_token"].as_str().unwrap(),
        GRAPH_APP_ID,
    )
    .await;
    assert!(header.x5t.is_none(), "v2 headers carry kid only");
    assert_eq!(names(&c), expected_names(["azp", "azpacr"]), "{c}");
    assert_eq!(c["aud"], GRAPH_APP_ID, "v2 aud is the API's client ID");
    assert_eq!(c["ver"], "2.0");
    assert_eq!(
        c["iss"],
        format!("https://login.microsoftonline.com/{tid}/v2.0")
    );
    assert_eq!(
        (c["azp"].as_str(), c["azpacr"].as_str()),
        (Some(cid), Some("2"))
    );
    assert_eq!(c["xms_mirid"], mirid(UAMI_ID));
    assert!(c["xms_mirid"]
        .as_str()
        .unwrap()
        .contains("/resourcegroups/rg1/"));
    let (rh_tid, rh_app) = assert_opaque_and_xms_shapes(&c, T0);
    assert_eq!((rh_tid.as_str(), rh_app.as_str()), (tid, GRAPH_APP_ID));
    aad.stop().await;
}

/// What Entra puts in `aud` for a token for `f` requested as `requested` at endpoint `v2`.
fn expected_aud(f: &FirstPartyResource, requested: &str, v2: bool) -> String {
    match (v2 && !f.v1_only, f.app_id) {
        (true, Some(id)) => id.to_string(),
        _ => requested.to_string(),
    }
}

#[tokio::test]
async fn every_first_party_resource_is_accepted_in_every_sdk_form_with_entras_aud() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let cert = client_cert();
    let (tenant, sp) = aad.principal(VM_ID, &cert).await;
    let (tid, cid) = (tenant.tenant_id.as_str(), sp.app_id.as_str());
    let (v1, v2) = (
        format!("/{tid}/oauth2/token"),
        format!("/{tid}/oauth2/v2.0/token"),
    );
    let (v1_aud, v2_aud) = (
        format!("{}{v1}", aad.http_url),
        format!("{}{v2}", aad.http_url),
    );
    let required = [
        "https://management.azure.com",
        "https://vault.azure.net",
        "https://storage.azure.com",
        "https://database.windows.net",
        "https://servicebus.azure.net",
        "https://eventhubs.azure.net",
        "https://cosmos.azure.com",
        "https://cognitiveservices.azure.com",
        "https://graph.microsoft.com",
        "https://api.loganalytics.io",
        "https://kusto.kusto.windows.net",
        "https://containerregistry.azure.net",
        "https://azconfig.io",
    ];
    for uri in required {
        assert!(
            FIRST_PARTY.iter().any(|f| f.uris.contains(&uri)),
            "{uri} is in the table"
        );
    }
    let mut checked = 0;
    for f in FIRST_PARTY {
        let mut forms: Vec<String> = f
            .uris
            .iter()
            .flat_map(|u| [u.to_string(), format!("{u}/")])
            .collect();
        forms.extend(f.app_id.map(String::from));
        forms.extend(
            f.host_suffixes
                .iter()
                .map(|s| format!("https://account1{s}")),
        );
        for requested in &forms {
            // v1: resource=<form>.
            let a = imds_assertion(&cert, cid, &v1_aud, T0);
            let (status, body) = aad.post_form(&v1, &v1_form(cid, &a, requested)).await;
            assert_eq!(status, 200, "v1 {requested}: {body}");
            assert_eq!(body["resource"], requested.as_str());
            let c = payload(body["access_token"].as_str().unwrap());
            assert_eq!(c["aud"], requested.as_str(), "v1 {requested}");
            assert_eq!(c["ver"], "1.0");

            // v2: scope=<form>/.default (a trailing-slash form gives `…//.default`, as the
            // azure-cli sends for ARM).
            let scope = format!("{requested}/.default");
            let a = imds_assertion(&cert, cid, &v2_aud, T0);
            let (status, body) = aad.post_form(&v2, &v2_form(cid, &a, &scope)).await;
            assert_eq!(status, 200, "v2 {scope}: {body}");
            let token = body["access_token"].as_str().unwrap();
            let c = payload(token);
            let aud = expected_aud(f, requested, true);
            assert_eq!(c["aud"], aud.as_str(), "v2 {scope}");
            assert_eq!(c["ver"], if f.v1_only { "1.0" } else { "2.0" }, "{scope}");
            checked += 2;
        }
        // One token per resource verified end to end against the published keys.
        let requested = f.uris[0];
        let a = imds_assertion(&cert, cid, &v2_aud, T0);
        let (_, body) = aad
            .post_form(&v2, &v2_form(cid, &a, &format!("{requested}/.default")))
            .await;
        let discovery = if f.v1_only {
            format!("/{tid}/.well-known/openid-configuration")
        } else {
            format!("/{tid}/v2.0/.well-known/openid-configuration")
        };
        verify_via_discovery(
            &aad,
            &discovery,
            body["access_token"].as_str().unwrap(),
            &expected_aud(f, requested, true),
        )
        .await;
    }
    assert!(checked > 100, "{checked} requests");
    aad.stop().await;
}

#[tokio::test]
async fn unknown_resources_keep_aadsts500011_in_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let cert = client_cert();
    let (tenant, sp) = aad.principal(VM_ID, &cert).await;
    let (tid, cid) = (tenant.tenant_id.as_str(), sp.app_id.as_str());
    let (v1, v2) = (
        format!("/{tid}/oauth2/token"),
        format!("/{tid}/oauth2/v2.0/token"),
    );
    for unknown in [
        "https://unknown.example",
        "https://vault.azure.net.evil.example",
        "https://myvault.vault.azure.net",
        "https://account1.blob.core.windows.net/container",
        "api://my-api",
        "11111111-2222-3333-4444-555555555555",
    ] {
        let a = imds_assertion(&cert, cid, &format!("{}{v1}", aad.http_url), T0);
        let (status, body) = aad.post_form(&v1, &v1_form(cid, &a, unknown)).await;
        assert_eq!(
            (
                status,
                body["error"].as_str(),
                body["error_codes"][0].as_u64()
            ),
            (400, Some("invalid_resource"), Some(500011)),
            "v1 {unknown}: {body}"
        );
        let a = imds_assertion(&cert, cid, &format!("{}{v2}", aad.http_url), T0);
        let scope = format!("{unknown}/.default");
        let (status, body) = aad.post_form(&v2, &v2_form(cid, &a, &scope)).await;
        assert_eq!(
            (status, body["error_codes"][0].as_u64()),
            (400, Some(500011)),
            "v2 {scope}: {body}"
        );
    }
    aad.stop().await;
}
