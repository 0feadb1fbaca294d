//! OpenID Connect discovery documents (v1 and v2) and JWKS bodies in Entra's shape
//! (<https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc>; Entra's common documents as captured in
//! <https://github.com/panva/wellknown/blob/99a4b3ae9d1de76decf16c46cd945d29aa9b2a63/issuers/entra-common/entra-common.mjs>).
//!
//! URLs use the configured public URL; `issuer` equals the `iss` of issued tokens. For the
//! multi-tenant aliases (`common`, `organizations`) the tenant ID is the literal `{tenantid}` as in
//! Entra's common documents.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::claims::{issuer_v1, issuer_v2, Version};
use crate::keys::SigningKey;

/// Tenant placeholder Entra's multi-tenant documents use.
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// `token_endpoint_auth_methods_supported` of both documents.
const AUTH_METHODS: &[&str] = &[
    "client_secret_post",
    "private_key_jwt",
    "client_secret_basic",
];

/// Claims both documents list in `claims_supported`.
const COMMON_CLAIMS: &[&str] = &[
    "sub",
    "iss",
    "cloud_instance_name",
    "cloud_instance_host_name",
    "cloud_graph_host_name",
    "msgraph_host",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "acr",
    "nonce",
];

/// Claims only the v1 document lists in `claims_supported`, after [`COMMON_CLAIMS`].
const V1_CLAIMS: &[&str] = &["amr", "email", "given_name", "family_name", "nickname"];

/// Claims only the v2 document lists in `claims_supported`, after [`COMMON_CLAIMS`].
const V2_CLAIMS: &[&str] = &[
    "preferred_username",
    "name",
    "tid",
    "ver",
    "at_hash",
    "c_hash",
    "email",
];

/// The OpenID configuration document of tenant `tid` for token endpoint `version`: v1 at
/// `/{tenant}/.well-known/openid-configuration`, v2 at `/{tenant}/v2.0/.well-known/openid-configuration`.
pub fn openid_configuration(public_url: &str, tid: &str, version: Version) -> Value {
    let base = format!("{public_url}/{tid}");
    let mut doc = match version {
        Version::V1 => json!({
            "token_endpoint": format!("{base}/oauth2/token"),
            "jwks_uri": format!("{public_url}/common/discovery/keys"),
            "response_types_supported":
                ["code", "id_token", "code id_token", "token id_token", "token"],
            "scopes_supported": ["openid"],
            "issuer": issuer_v1(tid),
            "microsoft_multi_refresh_token": true,
            "authorization_endpoint": format!("{base}/oauth2/authorize"),
            "device_authorization_endpoint": format!("{base}/oauth2/devicecode"),
            "end_session_endpoint": format!("{base}/oauth2/logout"),
            "check_session_iframe": format!("{base}/oauth2/checksession"),
            "userinfo_endpoint": format!("{base}/openid/userinfo"),
        }),
        Version::V2 => json!({
            "token_endpoint": format!("{base}/oauth2/v2.0/token"),
            "jwks_uri": format!("{base}/discovery/v2.0/keys"),
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": issuer_v2(tid),
            "request_uri_parameter_supported": false,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
            "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        }),
    };
    let claims = match version {
        Version::V1 => [COMMON_CLAIMS, V1_CLAIMS].concat(),
        Version::V2 => [COMMON_CLAIMS, V2_CLAIMS].concat(),
    };
    // Members both versions carry, with the same values except the claims list.
    let shared = json!({
        "claims_supported": claims,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "kerberos_endpoint": format!("{base}/kerberos"),
        "tenant_region_scope": null,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    });
    if let (Value::Object(doc), Value::Object(shared)) = (&mut doc, shared) {
        doc.extend(shared);
    }
    doc
}

/// The JWKS `{"keys":[…]}` of the published `keys` (current first, then retired keys whose tokens
/// may still be valid); v2 key sets carry the v2 `issuer` of tenant `tid` on each key.
pub fn jwks(keys: &[Arc<SigningKey>], v2_tid: Option<&str>) -> Value {
    let issuer = v2_tid.map(issuer_v2);
    let keys: Vec<Value> = keys.iter().map(|k| k.jwk(issuer.as_deref())).collect();
    json!({ "keys": keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_point_at_this_server_and_match_token_issuers() {
        let v1 = openid_configuration("http://127.0.0.1:1", "t1", Version::V1);
        assert_eq!(v1["issuer"], "https://sts.windows.net/t1/");
        assert_eq!(v1["jwks_uri"], "http://127.0.0.1:1/common/discovery/keys");
        assert_eq!(v1["token_endpoint"], "http://127.0.0.1:1/t1/oauth2/token");
        let v2 = openid_configuration("http://127.0.0.1:1", "t1", Version::V2);
        assert_eq!(v2["issuer"], "https://login.microsoftonline.com/t1/v2.0");
        assert_eq!(v2["jwks_uri"], "http://127.0.0.1:1/t1/discovery/v2.0/keys");
        assert_eq!(
            v2["token_endpoint"],
            "http://127.0.0.1:1/t1/oauth2/v2.0/token"
        );
    }
}
