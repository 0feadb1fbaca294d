//! The REST paths real clients (Azure CLI, azure-mgmt-*, azure-keyvault-secrets) call beyond single
//! resources: cloud metadata, subscription and tenant lists, group lists and asynchronous delete,
//! generic resources with `$filter`/`$top`/`nextLink`, subscription-wide lists, instance views, NICs,
//! `identities/default`, role definitions and assignment filters, error shapes, v2-issuer tokens, and
//! the Key Vault data plane's methods. ARM serves on a real loopback listener; a fake Azure AD serves
//! v1 and v2 discovery and the keys.

use base64::Engine;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::fakes::{SigningKey, TENANT};
use crate::{Sandbox, T0};

const ARM_AUD: &str = "https://management.azure.com/";
const VAULT_AUD: &str = "https://vault.azure.net";

/// Serves v1 and v2 OpenID discovery and the JWKS of `key`.
async fn serve_aad(key: &SigningKey, shutdown: CancellationToken) -> String {
    use axum::extract::Path;
    use axum::routing::get;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let rsa_key = rsa::RsaPrivateKey::from_pkcs8_der(&key.pkcs8).unwrap();
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({ "keys": [{ "kty": "RSA", "kid": key.kid, "n": b64(rsa_key.n().to_bytes_be()), "e": b64(rsa_key.e().to_bytes_be()) }] });
    let (b1, b2) = (url.clone(), url.clone());
    let router = axum::Router::new()
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(move |Path(t): Path<String>| {
                let b = b1.clone();
                async move { axum::Json(json!({ "issuer": format!("https://sts.windows.net/{t}/"), "jwks_uri": format!("{b}/common/discovery/keys") })) }
            }),
        )
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(move |Path(t): Path<String>| {
                let b = b2.clone();
                async move { axum::Json(json!({ "issuer": format!("https://login.microsoftonline.com/{t}/v2.0"), "jwks_uri": format!("{b}/common/discovery/keys") })) }
            }),
        )
        .route("/common/discovery/keys", get(move || async move { axum::Json(jwks) }));
    tokio::spawn(misim_core::serve::serve_http(l, router, shutdown));
    url
}

struct World {
    sb: Sandbox,
    key: SigningKey,
    sub: String,
    http: reqwest::Client,
    _aad: CancellationToken,
}

impl World {
    async fn start() -> World {
        let key = SigningKey::generate(T0);
        let aad = CancellationToken::new();
        let url = serve_aad(&key, aad.clone()).await;
        let sb = Sandbox::start_with_aad(&url).await;
        let sub = sb.arm.subscription("").unwrap().subscription_id;
        sb.arm
            .create_group("", "rg", "westeurope", Default::default())
            .await
            .unwrap();
        sb.arm
            .create_vm(misim_arm::CreateVm {
                resource: misim_arm::NewResource {
                    resource_group: "rg".into(),
                    name: "vm".into(),
                    ..Default::default()
                },
                ..Default::default()
            })
            .await
            .unwrap();
        sb.arm
            .assign_identity(misim_arm::IdentityTarget::vm("", "rg", "vm"), true, &[])
            .await
            .unwrap();
        World {
            sb,
            key,
            sub,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            _aad: aad,
        }
    }

    fn token_with(&self, oid: &str, aud: &str, v2: bool) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.key.kid.clone());
        let now = self.sb.clock.now();
        let mut claims = json!({
            "aud": aud, "iat": now - 300, "nbf": now - 300, "exp": now + 3600,
            "idtyp": "app", "oid": oid, "sub": oid, "tid": TENANT,
        });
        if v2 {
            claims["iss"] = json!(format!("https://login.microsoftonline.com/{TENANT}/v2.0"));
            claims["azp"] = json!("app-v2");
            claims["ver"] = json!("2.0");
        } else {
            claims["iss"] = json!(format!("https://sts.windows.net/{TENANT}/"));
            claims["appid"] = json!("app-v1");
            claims["ver"] = json!("1.0");
        }
        let pem = misim_core::cert::to_pem("PRIVATE KEY", &self.key.pkcs8);
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    fn token(&self, oid: &str) -> String {
        self.token_with(oid, ARM_AUD, false)
    }

    async fn call(
        &self,
        method: &str,
        path_or_url: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.sb.rest_url)
        };
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let (s, _, b) = self.call("GET", path, Some(token), None).await;
        (s, b)
    }

    async fn grant(&self, scope: &str, role: &str, oid: &str) {
        self.sb
            .arm
            .create_role_assignment(scope, role, oid, "")
            .await
            .unwrap();
    }

    fn rg(&self) -> String {
        format!("/subscriptions/{}/resourceGroups/rg", self.sub)
    }
}

fn oid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn cloud_metadata_is_unauthenticated_and_points_at_the_url_the_client_used() {
    let w = World::start().await;
    let (status, _, doc) = w
        .call(
            "GET",
            "//metadata/endpoints?api-version=2022-09-01",
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["resourceManager"], format!("{}/", w.sb.rest_url));
    assert_eq!(
        doc["authentication"]["audiences"],
        json!([
            "https://management.core.windows.net/",
            "https://management.azure.com/"
        ])
    );
    assert_eq!(doc["suffixes"]["keyVaultDns"], "vault.azure.net");
    let (_, _, old) = w
        .call(
            "GET",
            "/metadata/endpoints?api-version=2019-05-01",
            None,
            None,
        )
        .await;
    assert_eq!(old[0]["name"], "misim");
    let (status, _, err) = w.call("GET", "/metadata/endpoints", None, None).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("MissingApiVersionParameter"))
    );
}

#[tokio::test]
async fn subscriptions_list_only_those_the_caller_has_a_role_in_and_tenants_list_its_tenant() {
    let w = World::start().await;
    let (who, nobody) = (oid(), oid());
    w.grant(&w.rg(), "Reader", &who).await;
    let (status, subs) = w
        .get("/subscriptions?api-version=2022-12-01", &w.token(&who))
        .await;
    assert_eq!(status, 200, "{subs}");
    assert_eq!(subs["value"][0]["subscriptionId"], w.sub);
    assert_eq!(subs["count"]["value"], 1);
    let (_, none) = w
        .get("/subscriptions?api-version=2022-12-01", &w.token(&nobody))
        .await;
    assert_eq!(none["value"], json!([]));
    let (_, tenants) = w
        .get("/tenants?api-version=2022-12-01", &w.token(&who))
        .await;
    assert_eq!(tenants["value"][0]["tenantId"], TENANT);
    let (status, _) = w
        .get(
            &format!("/subscriptions/{}/locations?api-version=2022-12-01", w.sub),
            &w.token(&who),
        )
        .await;
    assert_eq!(
        status, 403,
        "a group-scope role does not grant reading the subscription"
    );
    w.grant(&format!("/subscriptions/{}", w.sub), "Reader", &who)
        .await;
    let (status, locations) = w
        .get(
            &format!("/subscriptions/{}/locations?api-version=2022-12-01", w.sub),
            &w.token(&who),
        )
        .await;
    assert_eq!(status, 200, "{locations}");
    assert!(locations["value"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["name"] == "westeurope"));
}

#[tokio::test]
async fn groups_list_what_the_caller_reads_and_delete_is_accepted_with_a_location_to_poll() {
    let w = World::start().await;
    let owner = oid();
    w.grant(&format!("/subscriptions/{}", w.sub), "Owner", &owner)
        .await;
    let t = w.token(&owner);
    let api = "api-version=2021-04-01";
    let (status, _, created) = w
        .call(
            "PUT",
            &format!("/subscriptions/{}/resourcegroups/rg2?{api}", w.sub),
            Some(&t),
            Some(json!({"location":"westeurope"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (_, list) = w
        .get(
            &format!("/subscriptions/{}/resourcegroups?{api}", w.sub),
            &t,
        )
        .await;
    let names: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(names, ["rg", "rg2"]);
    let reader = oid();
    w.grant(&w.rg(), "Reader", &reader).await;
    let (_, list) = w
        .get(
            &format!("/subscriptions/{}/resourcegroups?{api}", w.sub),
            &w.token(&reader),
        )
        .await;
    assert_eq!(list["value"].as_array().unwrap().len(), 1, "{list}");

    let (status, headers, _) = w
        .call(
            "DELETE",
            &format!("/subscriptions/{}/resourcegroups/rg2?{api}", w.sub),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(headers["retry-after"], "0");
    let location = headers["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!(
            "{}/subscriptions/{}/operationresults/",
            w.sb.rest_url, w.sub
        )),
        "{location}"
    );
    let (status, _, _) = w.call("GET", &location, Some(&t), None).await;
    assert_eq!(status, 200);
    let (status, err) = w
        .get(
            &format!("/subscriptions/{}/resourcegroups/rg2?{api}", w.sub),
            &t,
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("ResourceGroupNotFound"))
    );
    let (status, _, _) = w
        .call(
            "DELETE",
            &format!("/subscriptions/{}/resourcegroups/rg2?{api}", w.sub),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn generic_resources_filter_and_page_with_next_links() {
    let w = World::start().await;
    let who = oid();
    w.grant(&format!("/subscriptions/{}", w.sub), "Reader", &who)
        .await;
    w.sb.arm
        .create_user_assigned_identity("", "rg", "id1", "", Default::default())
        .await
        .unwrap();
    let t = w.token(&who);
    let (status, all) = w
        .get(&format!("{}/resources?api-version=2021-04-01", w.rg()), &t)
        .await;
    assert_eq!(status, 200, "{all}");
    let types: Vec<&str> = all["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "Microsoft.Compute/virtualMachines",
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            "Microsoft.Network/networkInterfaces"
        ]
    );
    let filter = "%24filter=resourceGroup%20eq%20%27RG%27%20and%20resourceType%20eq%20%27Microsoft.Compute%2FvirtualMachines%27";
    let (_, vms) = w
        .get(
            &format!(
                "/subscriptions/{}/resources?api-version=2021-04-01&{filter}&%24expand=createdTime",
                w.sub
            ),
            &t,
        )
        .await;
    assert_eq!(vms["value"].as_array().unwrap().len(), 1, "{vms}");
    assert_eq!(vms["value"][0]["name"], "vm");
    let (_, page) = w
        .get(
            &format!("{}/resources?api-version=2021-04-01&$top=2", w.rg()),
            &t,
        )
        .await;
    assert_eq!(page["value"].as_array().unwrap().len(), 2);
    let next = page["nextLink"].as_str().unwrap();
    assert!(next.starts_with(&w.sb.rest_url), "{next}");
    let (_, rest) = w.get(next, &t).await;
    assert_eq!(rest["value"].as_array().unwrap().len(), 1);
    assert!(rest.get("nextLink").is_none());
    let (status, err) = w
        .get(
            &format!(
                "{}/resources?api-version=2021-04-01&$filter=name%20ne%20%27x%27",
                w.rg()
            ),
            &t,
        )
        .await;
    assert_eq!(status, 400, "{err}");
}

#[tokio::test]
async fn vms_list_across_the_subscription_with_instance_view_and_nic_by_reference() {
    let w = World::start().await;
    let who = oid();
    w.grant(&w.rg(), "Reader", &who).await;
    let t = w.token(&who);
    let api = "api-version=2024-07-01";
    let (_, all) = w
        .get(
            &format!(
                "/subscriptions/{}/providers/Microsoft.Compute/virtualMachines?{api}",
                w.sub
            ),
            &t,
        )
        .await;
    assert_eq!(all["value"][0]["name"], "vm", "{all}");
    let vm_path = format!("{}/providers/Microsoft.Compute/virtualMachines/vm", w.rg());
    let (_, plain) = w.get(&format!("{vm_path}?{api}"), &t).await;
    assert!(plain["properties"].get("instanceView").is_none());
    let (_, expanded) = w
        .get(&format!("{vm_path}?{api}&$expand=instanceView"), &t)
        .await;
    let statuses = expanded["properties"]["instanceView"]["statuses"]
        .as_array()
        .unwrap();
    assert!(
        statuses.iter().any(|s| s["code"] == "PowerState/running"),
        "{expanded}"
    );
    let (status, view) = w.get(&format!("{vm_path}/instanceView?{api}"), &t).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["statuses"][0]["code"], "ProvisioningState/succeeded");
    let nic_id = expanded["properties"]["networkProfile"]["networkInterfaces"][0]["id"]
        .as_str()
        .unwrap();
    let (status, nic) = w.get(&format!("{nic_id}?api-version=2024-05-01"), &t).await;
    assert_eq!(status, 200, "{nic}");
    assert_eq!(nic["id"], nic_id);
    let vm = w.sb.arm.get_vm("", "rg", "vm").await.unwrap();
    assert_eq!(
        nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        vm.private_ip
    );
    assert_eq!(nic["properties"]["virtualMachine"]["id"], vm_path);
    let (_, identity) = w
        .get(&format!("{vm_path}/providers/Microsoft.ManagedIdentity/identities/default?api-version=2023-01-31"), &t)
        .await;
    let sys = vm.identity.system_identity.unwrap();
    assert_eq!(
        identity["properties"]["principalId"], sys.principal_id,
        "{identity}"
    );
    assert_eq!(identity["properties"]["clientId"], sys.client_id);
}

#[tokio::test]
async fn role_definitions_filter_by_name_and_assignments_by_scope_and_principal() {
    let w = World::start().await;
    let (admin, other) = (oid(), oid());
    let sub_scope = format!("/subscriptions/{}", w.sub);
    w.grant(&sub_scope, "Owner", &admin).await;
    w.grant(
        &format!("{}/providers/Microsoft.Compute/virtualMachines/vm", w.rg()),
        "Reader",
        &other,
    )
    .await;
    let t = w.token(&admin);
    let api = "api-version=2022-04-01";
    let (_, defs) = w
        .get(&format!("{}/providers/Microsoft.Authorization/roleDefinitions?{api}&$filter=roleName%20eq%20%27Key%20Vault%20Secrets%20User%27", w.rg()), &t)
        .await;
    let defs = defs["value"].as_array().unwrap();
    assert_eq!(defs.len(), 1);
    assert_eq!(defs[0]["properties"]["roleName"], "Key Vault Secrets User");
    assert_eq!(
        defs[0]["properties"]["permissions"][0]["dataActions"][0],
        "Microsoft.KeyVault/vaults/secrets/getSecret/action"
    );
    let (status, one) = w
        .get(&format!("{sub_scope}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7?{api}"), &t)
        .await;
    assert_eq!(
        (status, one["properties"]["roleName"].as_str()),
        (200, Some("Reader"))
    );
    let assignments =
        format!("{sub_scope}/providers/Microsoft.Authorization/roleAssignments?{api}");
    let count = |v: Value| v["value"].as_array().unwrap().len();
    assert_eq!(
        count(w.get(&assignments, &t).await.1),
        2,
        "below the scope too"
    );
    assert_eq!(
        count(
            w.get(&format!("{assignments}&$filter=atScope()"), &t)
                .await
                .1
        ),
        1
    );
    assert_eq!(
        count(
            w.get(
                &format!("{assignments}&$filter=principalId%20eq%20%27{other}%27"),
                &t
            )
            .await
            .1
        ),
        1
    );
    assert_eq!(
        count(
            w.get(
                &format!("{assignments}&$filter=assignedTo(%27{admin}%27)"),
                &t
            )
            .await
            .1
        ),
        1
    );
    let (_, perms) = w
        .get(
            &format!(
                "{}/providers/Microsoft.Authorization/permissions?{api}",
                w.rg()
            ),
            &w.token(&admin),
        )
        .await;
    assert_eq!(perms["value"][0]["actions"], json!(["*"]));
}

#[tokio::test]
async fn unknown_types_namespaces_and_api_versions_answer_in_azures_shapes() {
    let w = World::start().await;
    let who = oid();
    w.grant(&format!("/subscriptions/{}", w.sub), "Reader", &who)
        .await;
    let t = w.token(&who);
    let (status, err) = w
        .get(
            &format!(
                "{}/providers/Microsoft.Compute/disks/d?api-version=2024-03-02",
                w.rg()
            ),
            &t,
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("InvalidResourceType")),
        "{err}"
    );
    let (status, err) = w
        .get(
            &format!(
                "{}/providers/Microsoft.Nope/things/x?api-version=2024-03-02",
                w.rg()
            ),
            &t,
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("InvalidResourceNamespace")),
        "{err}"
    );
    let vm = format!("{}/providers/Microsoft.Compute/virtualMachines/vm", w.rg());
    for old_or_future in ["2014-01-01", "2999-01-01"] {
        let (status, err) = w
            .get(&format!("{vm}?api-version={old_or_future}"), &t)
            .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("NoRegisteredProviderFound")),
            "{err}"
        );
    }
    let (status, err) = w.get(&format!("{}?api-version=latest", w.rg()), &t).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("InvalidApiVersionParameter")),
        "{err}"
    );
}

#[tokio::test]
async fn arm_accepts_v2_tokens_for_its_audience() {
    let w = World::start().await;
    let who = oid();
    w.grant(&w.rg(), "Reader", &who).await;
    let v2 = w.token_with(&who, "https://management.azure.com", true);
    let (status, body) = w
        .get(&format!("{}?api-version=2021-04-01", w.rg()), &v2)
        .await;
    assert_eq!(status, 200, "{body}");
    let vault_token = w.token_with(&who, VAULT_AUD, true);
    let (status, err) = w
        .get(&format!("{}?api-version=2021-04-01", w.rg()), &vault_token)
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("InvalidAuthenticationTokenAudience"))
    );
}

#[tokio::test]
async fn key_vault_data_plane_follows_the_methods_and_data_actions() {
    let w = World::start().await;
    w.sb.arm.create_vault("", "rg", "kv1", "").await.unwrap();
    let vault_scope = format!("{}/providers/Microsoft.KeyVault/vaults/kv1", w.rg());
    let (officer, user) = (oid(), oid());
    w.grant(&vault_scope, "Key Vault Secrets Officer", &officer)
        .await;
    w.grant(&vault_scope, "Key Vault Secrets User", &user).await;
    let (o, u) = (
        w.token_with(&officer, VAULT_AUD, false),
        w.token_with(&user, VAULT_AUD, true),
    );
    let kv = "/vaults/kv1";
    let api = "api-version=7.5";
    let put = |value: &str| json!({ "value": value, "contentType": "text/plain" });
    let (status, _, first) = w
        .call(
            "PUT",
            &format!("{kv}/secrets/s?{api}"),
            Some(&o),
            Some(put("one")),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["value"], "one");
    let (_, _, second) = w
        .call(
            "PUT",
            &format!("{kv}/secrets/s?{api}"),
            Some(&o),
            Some(put("two")),
        )
        .await;
    assert_eq!(second["value"], "two", "set returns the new value");
    let v1 = first["id"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert!(first["id"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}/secrets/s/", w.sb.rest_url)));
    assert_eq!(
        w.get(&format!("{kv}/secrets/s?{api}"), &u).await.1["value"],
        "two"
    );
    assert_eq!(
        w.get(&format!("{kv}/secrets/s/{v1}?{api}"), &u).await.1["value"],
        "one"
    );
    assert_eq!(
        w.get(&format!("{kv}/secrets/s/{}?{api}", "0".repeat(32)), &u)
            .await
            .0,
        404
    );
    let (_, list) = w.get(&format!("{kv}/secrets?{api}"), &u).await;
    assert_eq!(
        list["value"][0]["id"],
        format!("{}/secrets/s", w.sb.rest_url)
    );
    assert!(list["value"][0].get("value").is_none());
    let (_, versions) = w
        .get(&format!("{kv}/secrets/s/versions?{api}&maxresults=1"), &u)
        .await;
    assert_eq!(versions["value"].as_array().unwrap().len(), 1);
    let next = versions["nextLink"].as_str().unwrap();
    assert!(next.contains("maxresults=1"), "{next}");
    assert_eq!(
        w.get(next, &u).await.1["value"].as_array().unwrap().len(),
        1
    );

    // Secrets User reads but may not write or delete.
    let (status, _, err) = w
        .call(
            "PUT",
            &format!("{kv}/secrets/s?{api}"),
            Some(&u),
            Some(put("x")),
        )
        .await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["error"]["innererror"]["code"], "ForbiddenByRbac");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("setSecret/action"));
    assert_eq!(
        w.call("DELETE", &format!("{kv}/secrets/s?{api}"), Some(&u), None)
            .await
            .0,
        403
    );

    // Soft delete, recover, delete again, purge.
    let (status, _, deleted) = w
        .call("DELETE", &format!("{kv}/secrets/s?{api}"), Some(&o), None)
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted["recoveryId"],
        format!("{}/deletedsecrets/s", w.sb.rest_url)
    );
    assert_eq!(w.get(&format!("{kv}/secrets/s?{api}"), &o).await.0, 404);
    assert_eq!(
        w.get(&format!("{kv}/deletedsecrets/s?{api}"), &o).await.0,
        200
    );
    assert_eq!(
        w.get(&format!("{kv}/deletedsecrets?{api}"), &o).await.1["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, _, _) = w
        .call(
            "PUT",
            &format!("{kv}/secrets/s?{api}"),
            Some(&o),
            Some(put("three")),
        )
        .await;
    assert_eq!(
        status, 409,
        "a deleted name is kept until recovered or purged"
    );
    let (status, _, _) = w
        .call(
            "POST",
            &format!("{kv}/deletedsecrets/s/recover?{api}"),
            Some(&o),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        w.get(&format!("{kv}/secrets/s?{api}"), &o).await.1["value"],
        "two"
    );
    w.call("DELETE", &format!("{kv}/secrets/s?{api}"), Some(&o), None)
        .await;
    assert_eq!(
        w.call(
            "DELETE",
            &format!("{kv}/deletedsecrets/s?{api}"),
            Some(&o),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        w.get(&format!("{kv}/deletedsecrets/s?{api}"), &o).await.0,
        404
    );
    // With one vault, the root data plane addresses it.
    let (status, root) = w.get(&format!("/secrets?{api}"), &o).await;
    assert_eq!(
        (status, root["value"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{root}"
    );
    // A 401 carries the challenge clients read.
    let (status, headers, _) = w
        .call("GET", &format!("{kv}/secrets/s?{api}"), None, None)
        .await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("resource=\"https://vault.azure.net\""));
}

#[tokio::test]
async fn scale_set_instances_are_readable_one_by_one_with_their_instance_view() {
    let w = World::start().await;
    w.sb.arm
        .create_vmss(misim_arm::CreateVmss {
            resource: misim_arm::NewResource {
                resource_group: "rg".into(),
                name: "ss".into(),
                ..Default::default()
            },
            capacity: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let who = oid();
    w.grant(&w.rg(), "Reader", &who).await;
    let t = w.token(&who);
    let ss = format!(
        "{}/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines",
        w.rg()
    );
    let api = "api-version=2024-07-01";
    let (_, list) = w.get(&format!("{ss}?{api}"), &t).await;
    let first = list["value"][0]["instanceId"].as_str().unwrap().to_string();
    let (status, one) = w
        .get(&format!("{ss}/{first}?{api}&$expand=instanceView"), &t)
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["instanceId"], first.as_str());
    assert!(one["properties"]["instanceView"]["statuses"].is_array());
    let (status, view) = w.get(&format!("{ss}/{first}/instanceView?{api}"), &t).await;
    assert_eq!(status, 200, "{view}");
    assert!(view["statuses"][1]["code"]
        .as_str()
        .unwrap()
        .starts_with("PowerState/"));
    let (status, err) = w.get(&format!("{ss}/99?{api}"), &t).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
}

#[tokio::test]
async fn vm_put_and_delete_are_asynchronous_operations_that_complete() {
    let w = World::start().await;
    let owner = oid();
    w.grant(&w.rg(), "Owner", &owner).await;
    let t = w.token(&owner);
    let api = "api-version=2024-07-01";
    let vm2 = format!("{}/providers/Microsoft.Compute/virtualMachines/vm2", w.rg());
    let body = json!({ "location": "westeurope", "properties": { "hardwareProfile": { "vmSize": "Standard_B1s" } } });
    let (status, headers, created) = w
        .call("PUT", &format!("{vm2}?{api}"), Some(&t), Some(body))
        .await;
    assert_eq!(status, 201, "{created}");
    let op = headers["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        op.starts_with(&format!(
            "{}/subscriptions/{}/providers/Microsoft.Compute/locations/westeurope/operations/",
            w.sb.rest_url, w.sub
        )),
        "{op}"
    );
    let (status, status_body) = w.get(&op, &t).await;
    assert_eq!(
        (status, status_body["status"].as_str()),
        (200, Some("Succeeded")),
        "{status_body}"
    );

    let (status, headers, _) = w
        .call("DELETE", &format!("{vm2}?{api}"), Some(&t), None)
        .await;
    assert_eq!(status, 200);
    let op = headers["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_string();
    let monitor = headers["location"].to_str().unwrap().to_string();
    assert!(monitor.contains("monitor=true"), "{monitor}");
    assert_eq!(w.get(&op, &t).await.1["status"], "Succeeded");
    assert_eq!(w.call("GET", &monitor, Some(&t), None).await.0, 200);
    assert_eq!(w.get(&format!("{vm2}?{api}"), &t).await.0, 404);
    let (status, _) = w
        .get(&format!("/subscriptions/{}/providers/Microsoft.Compute/locations/westeurope/operations/bm90LWFuLW9w?{api}", w.sub), &t)
        .await;
    assert_eq!(status, 404, "an operation misim did not hand out");
}
