//! `GET /metadata/identity/oauth2/token`: success shape, selection table (`src/selection.rs`), error
//! catalogue (docs/imds.md), VM isolation and `/metadata/identity/info`.

use serde_json::{json, Value};

use crate::{
    description, get_json, http, system_identity, token, user_identity, vm_id, Sandbox, START,
    TENANT,
};

#[tokio::test]
async fn system_assigned_token_has_the_imds_shape_with_string_values() {
    let sb = Sandbox::unlimited().await;
    let endpoint = sb.place("vm1").await;
    let s = system_identity("vm1");
    sb.configure("vm1", &[&s]).await.unwrap();
    let r = http()
        .get(format!(
            "{endpoint}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert!(r.headers()["server"]
        .to_str()
        .unwrap()
        .starts_with("IMDS/150.870.65."));
    let body: Value = r.json().await.unwrap();
    let expected = json!({
        "access_token": format!("token-1-{}", s.client_id),
        "client_id": s.client_id,
        "expires_in": "3600",
        "expires_on": (START + 3600).to_string(),
        "ext_expires_in": "3600",
        "not_before": (START - 300).to_string(),
        "resource": "https://management.azure.com/",
        "token_type": "Bearer",
    });
    assert_eq!(body, expected);
    let form = sb.aad.last_form.lock().unwrap().clone().unwrap();
    assert_eq!(form["grant_type"], "client_credentials");
    assert!(
        !form.contains_key("xms_az_rid"),
        "system-assigned requests carry no xms_az_rid"
    );
}

#[tokio::test]
async fn user_assigned_token_request_carries_the_vm_resource_id() {
    let sb = Sandbox::unlimited().await;
    let endpoint = sb.place("vm1").await;
    let u = user_identity("u1");
    sb.configure("vm1", &[&u]).await.unwrap();
    let (status, body) = token(&endpoint, &format!("&msi_res_id={}", u.resource_id)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["msi_res_id"], u.resource_id.as_str());
    let form = sb.aad.last_form.lock().unwrap().clone().unwrap();
    assert_eq!(form["xms_az_rid"], vm_id("vm1"));
    assert_eq!(form["client_id"], u.client_id);
}

/// Client id of the token answered, or the error description.
async fn chosen(endpoint: &str, extra: &str) -> String {
    let (status, body) = token(endpoint, extra).await;
    if status == 200 {
        body["client_id"].as_str().unwrap().to_string()
    } else {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_request");
        description(&body).to_string()
    }
}

#[tokio::test]
async fn selection_follows_the_reference_table() {
    const NOT_FOUND: &str = "Identity not found";
    let sb = Sandbox::unlimited().await;
    let unknown = "&client_id=99999999-9999-9999-9999-999999999999";

    // No identities.
    let none = sb.place("none").await;
    assert_eq!(chosen(&none, "").await, NOT_FOUND);
    assert_eq!(chosen(&none, unknown).await, NOT_FOUND);

    // System only.
    let sys = sb.place("sys").await;
    let s = system_identity("sys");
    sb.configure("sys", &[&s]).await.unwrap();
    assert_eq!(chosen(&sys, "").await, s.client_id);
    assert_eq!(chosen(&sys, unknown).await, NOT_FOUND);

    // One user-assigned only: it is the default, and selectable.
    let one = sb.place("one").await;
    let u1 = user_identity("one-u1");
    sb.configure("one", &[&u1]).await.unwrap();
    assert_eq!(chosen(&one, "").await, u1.client_id);
    assert_eq!(
        chosen(&one, &format!("&client_id={}", u1.client_id)).await,
        u1.client_id
    );
    assert_eq!(chosen(&one, unknown).await, NOT_FOUND);

    // Two user-assigned, no system: a selector is required.
    let two = sb.place("two").await;
    let (a, b) = (user_identity("two-a"), user_identity("two-b"));
    sb.configure("two", &[&a, &b]).await.unwrap();
    assert_eq!(
        chosen(&two, "").await,
        "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request"
    );
    assert_eq!(
        chosen(&two, &format!("&client_id={}", b.client_id)).await,
        b.client_id
    );
    assert_eq!(
        chosen(&two, &format!("&object_id={}", a.principal_id)).await,
        a.client_id
    );
    assert_eq!(
        chosen(&two, &format!("&msi_res_id={}", b.resource_id)).await,
        b.client_id
    );
    assert_eq!(
        chosen(&two, &format!("&mi_res_id={}", a.resource_id)).await,
        a.client_id
    );
    assert_eq!(chosen(&two, unknown).await, NOT_FOUND);

    // System + user-assigned: system by default, the UAMI when selected.
    let mix = sb.place("mix").await;
    let (ms, mu) = (system_identity("mix"), user_identity("mix-u"));
    sb.configure("mix", &[&ms, &mu]).await.unwrap();
    assert_eq!(chosen(&mix, "").await, ms.client_id);
    assert_eq!(
        chosen(&mix, &format!("&client_id={}", mu.client_id)).await,
        mu.client_id
    );
    assert_eq!(chosen(&mix, unknown).await, NOT_FOUND);
}

#[tokio::test]
async fn a_vm_cannot_get_another_vms_identity() {
    let sb = Sandbox::unlimited().await;
    let a_endpoint = sb.place("vma").await;
    let b_endpoint = sb.place("vmb").await;
    let (sa, ua) = (system_identity("vma"), user_identity("ua"));
    sb.configure("vma", &[&sa, &ua]).await.unwrap();
    sb.configure("vmb", &[&system_identity("vmb")])
        .await
        .unwrap();
    assert_ne!(a_endpoint, b_endpoint);
    for extra in [
        format!("&client_id={}", sa.client_id),
        format!("&client_id={}", ua.client_id),
        format!("&object_id={}", ua.principal_id),
        format!("&msi_res_id={}", ua.resource_id),
        format!("&msi_res_id={}", vm_id("vma")),
    ] {
        let (status, body) = token(&b_endpoint, &extra).await;
        assert_eq!(
            (status, description(&body)),
            (400, "Identity not found"),
            "{extra}"
        );
    }
    let (status, body) = token(&a_endpoint, &format!("&client_id={}", ua.client_id)).await;
    assert_eq!(
        (status, body["client_id"].as_str()),
        (200, Some(ua.client_id.as_str()))
    );
}

async fn raw(url: &str, metadata: Option<&str>) -> (u16, Value) {
    let mut rq = http().get(url);
    if let Some(m) = metadata {
        rq = rq.header("Metadata", m);
    }
    let r = rq.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn invalid_request(d: &str) -> Value {
    json!({"error":"invalid_request","error_description":d})
}

#[tokio::test]
async fn request_errors_have_the_reference_bodies() {
    let sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    sb.configure("vm1", &[&system_identity("vm1")])
        .await
        .unwrap();
    let path = format!("{e}/metadata/identity/oauth2/token");
    let ok_query = "api-version=2018-02-01&resource=https://vault.azure.net";

    let header = invalid_request("Required metadata header not specified");
    assert_eq!(
        raw(&format!("{path}?{ok_query}"), None).await,
        (400, header.clone())
    );
    assert_eq!(
        raw(&format!("{path}?{ok_query}"), Some("false")).await,
        (400, header)
    );

    let forwarded = http()
        .get(format!("{path}?{ok_query}"))
        .header("Metadata", "true")
        .header("X-Forwarded-For", "10.0.0.9")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status().as_u16(), 400);

    let cases: Vec<(String, Value)> = vec![
        ("resource=https://vault.azure.net".into(), invalid_request("Required query variable 'api-version' is missing")),
        ("api-version=2018-02-01".into(), invalid_request("Required query variable 'resource' is missing")),
        (format!("{ok_query}&api-version=2019-08-01"), invalid_request("Duplicate query parameter name 'api-version' in request")),
        ("api-version=2017-12-01&resource=r".into(), invalid_request("Invalid 'api-version' requested")),
        ("api-version=banana&resource=r".into(), invalid_request("Invalid 'api-version' requested")),
        (
            format!("{ok_query}&client_id=a&object_id=b"),
            invalid_request("Only one of client_id, object_id or msi_res_id can be specified in the token request"),
        ),
        (format!("{ok_query}&bypass_cache=maybe"), invalid_request("Invalid value for query variable 'bypass_cache'")),
    ];
    for (query, expected) in cases {
        assert_eq!(
            get_json(&format!("{path}?{query}")).await,
            (400, expected),
            "{query}"
        );
    }

    let (status, body) = get_json(&format!(
        "{path}?api-version=2018-02-01&resource=https://unknown.example.com/"
    ))
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_resource");
    assert!(description(&body).starts_with(
        "AADSTS500011: The resource principal named https://unknown.example.com/ was not found in the tenant named"
    ));

    assert_eq!(
        get_json(&format!("{e}/metadata/identity/oauth2/nope")).await,
        (404, json!({"error":"Not Found"}))
    );
    let post = http()
        .post(format!("{path}?{ok_query}"))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 405);

    let (status, _) = get_json(&format!("{e}/METADATA/identity/oauth2/token?{ok_query}")).await;
    assert_eq!(status, 200, "the /metadata segment is case-insensitive");
}

#[tokio::test]
async fn unreachable_azure_ad_is_a_500_unknown() {
    let mut sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    sb.configure("vm1", &[&system_identity("vm1")])
        .await
        .unwrap();
    // Restart the host pointing at a loopback port nobody listens on.
    let closed = crate::loopback().await;
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    sb.stop_host().await;
    sb.aad_url = url;
    sb.start_host().await;
    let (status, body) = token(&e, "").await;
    assert_eq!(
        (status, body),
        (
            500,
            json!({"error":"unknown","error_description":"Failed to retrieve token from the Active directory"})
        )
    );
}

#[tokio::test]
async fn azure_ad_refusing_the_client_is_a_500_unknown() {
    let sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    let s = system_identity("vm1");
    sb.configure("vm1", &[&s]).await.unwrap();
    // AAD now knows another certificate for this client: the assertion's x5t no longer matches.
    sb.aad
        .register(&s.client_id, b"another certificate".to_vec());
    let (status, body) = token(&e, "").await;
    assert_eq!((status, body["error"].as_str()), (500, Some("unknown")));
}

#[tokio::test]
async fn identity_info_returns_the_tenant() {
    let sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    let url = format!("{e}/metadata/identity/info?api-version=2018-02-01");
    assert_eq!(
        get_json(&url).await,
        (400, invalid_request("Identity not found"))
    );
    sb.configure("vm1", &[&system_identity("vm1")])
        .await
        .unwrap();
    assert_eq!(get_json(&url).await, (200, json!({"tenantId": TENANT})));
}

#[tokio::test]
async fn a_repeated_metadata_header_is_refused_and_long_input_is_not_echoed_whole() {
    let sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    sb.configure("vm1", &[&system_identity("vm1")])
        .await
        .unwrap();
    let url = format!("{e}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net");
    // Two `Metadata` headers: refused like a missing one, whatever their values.
    let r = http()
        .get(&url)
        .header("Metadata", "true")
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        invalid_request("Required metadata header not specified")
    );
    // A 10 KB parameter name repeated: the error names it, cut to 200 characters.
    let long = "p".repeat(10_000);
    let (status, body) = raw(&format!("{url}&{long}=1&{long}=2"), Some("true")).await;
    assert_eq!(status, 400);
    let d = body["error_description"].as_str().unwrap();
    assert!(d.len() < 400, "{} bytes echoed", d.len());
    assert!(d.contains(&format!("{}…", "p".repeat(200))), "{d}");
    // Control characters in the echoed name are replaced.
    let (status, body) = raw(&format!("{url}&a%01b=1&a%01b=2"), Some("true")).await;
    assert_eq!(status, 400);
    let d = body["error_description"].as_str().unwrap();
    assert!(d.contains("a\u{FFFD}b") && !d.contains('\u{1}'), "{d:?}");
}
