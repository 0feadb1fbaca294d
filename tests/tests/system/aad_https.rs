//! HTTPS in `misim up`: Azure AD and ARM's REST surface also answer over TLS with a certificate from
//! misim's CA (kept in `<data_dir>/ca/`, reused across restarts); Azure AD's discovery over HTTPS
//! names https endpoints; endpoints.json says where everything is.

use crate::aad_common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aad_and_arm_rest_answer_over_https_with_misims_ca() {
    let sys = Sys::start(|_| {}).await;
    let e = sys.endpoints.clone();
    let tid = e.tenant_id.clone();
    assert!(
        e.aad_https.starts_with("https://127.0.0.1:"),
        "{}",
        e.aad_https
    );
    assert!(
        e.arm_rest_https.starts_with("https://127.0.0.1:"),
        "{}",
        e.arm_rest_https
    );
    assert_eq!(
        std::path::Path::new(&e.ca_file),
        sys.dir.path().join("ca").join("ca.pem")
    );
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(sys.dir.path().join("endpoints.json")).expect("endpoints.json"),
    )
    .expect("json");
    assert_eq!(written["aad_https"], e.aad_https.as_str());
    assert_eq!(written["arm_rest_https"], e.arm_rest_https.as_str());
    assert_eq!(written["ca_file"], e.ca_file.as_str());

    let v2 = sys
        .get_json(&format!(
            "{}/{tid}/v2.0/.well-known/openid-configuration",
            e.aad_https
        ))
        .await;
    assert_eq!(
        v2["token_endpoint"],
        format!("{}/{tid}/oauth2/v2.0/token", e.aad_https)
    );
    assert_eq!(
        v2["authorization_endpoint"],
        format!("{}/{tid}/oauth2/v2.0/authorize", e.aad_https)
    );
    let plain = sys
        .get_json(&format!(
            "{}/{tid}/v2.0/.well-known/openid-configuration",
            e.aad
        ))
        .await;
    assert_eq!(
        plain["token_endpoint"],
        format!("{}/{tid}/oauth2/v2.0/token", e.aad)
    );

    // ARM REST through the TLS forwarder answers exactly as over plain HTTP (401 without a token).
    let path = format!(
        "/subscriptions/{}/resourcegroups?api-version=2021-04-01",
        e.subscription_id
    );
    let via_tls = sys
        .http
        .get(format!("{}{path}", e.arm_rest_https))
        .send()
        .await
        .expect("https");
    let via_plain = sys
        .http
        .get(format!("{}{path}", e.arm_rest))
        .send()
        .await
        .expect("http");
    assert_eq!(via_tls.status(), via_plain.status());
    assert_eq!(via_tls.status().as_u16(), 401);
    assert_eq!(
        via_tls.json::<Value>().await.expect("json")["error"]["code"],
        via_plain.json::<Value>().await.expect("json")["error"]["code"]
    );

    // A client that does not trust misim's CA is refused.
    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    assert!(untrusting
        .get(format!("{}/healthz", e.aad_https))
        .send()
        .await
        .is_err());

    // The CA survives a restart on the same data directory; the client built before still trusts it.
    let ca_before = std::fs::read_to_string(&e.ca_file).expect("ca");
    let mut sys = sys;
    sys.restart().await;
    assert_eq!(
        std::fs::read_to_string(&sys.endpoints.ca_file).expect("ca"),
        ca_before
    );
    let body = sys
        .http
        .get(format!("{}/healthz", sys.endpoints.aad_https))
        .send()
        .await
        .expect("same CA after restart")
        .text()
        .await
        .expect("body");
    assert_eq!(body, "ok");
    sys.stop().await;
}
