//! `GET /metadata/endpoints?api-version=…`: ARM's cloud-metadata document (unauthenticated), what
//! `az cloud register --endpoint-resource-manager` and `azure-identity`/`azure-mgmt-*` cloud settings
//! read to find a cloud's endpoints. Shape from Azure's own document
//! (`https://management.azure.com/metadata/endpoints?api-version=2022-09-01`): one object from
//! api-version 2022-09-01 on, a list of clouds before. misim's document points the resource manager
//! at the URL the client used, Azure AD at misim's Azure AD, and keeps Azure's audiences and Key
//! Vault suffix (tokens misim issues carry Azure's audiences). Endpoints misim does not serve (graph,
//! portal, gallery, …) are left out so no client is steered to a real Azure host.

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::RestState;

static LOGIN_ENDPOINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names the Azure AD URL the document advertises as `authentication.loginEndpoint` (misim up:
/// Azure AD's HTTPS URL, which MSAL-based logins require); without it, the Azure AD URL ARM
/// validates tokens against is used.
pub fn set_login_endpoint(url: String) {
    let _ = LOGIN_ENDPOINT.set(url);
}

/// True for `/metadata/endpoints` (any case, extra slashes ignored: clients append the path to an
/// endpoint that may end with `/`).
pub fn is_metadata_path(path: &str) -> bool {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    matches!(seg.as_slice(), [m, e] if m.eq_ignore_ascii_case("metadata") && e.eq_ignore_ascii_case("endpoints"))
}

/// The cloud-metadata document for a client that reached ARM at `arm_base` (e.g.
/// `https://127.0.0.1:7706`), with Azure AD at `aad_base`.
pub fn document(arm_base: &str, aad_base: &str) -> Value {
    json!({
        "name": "misim",
        "resourceManager": format!("{}/", arm_base.trim_end_matches('/')),
        "authentication": {
            "loginEndpoint": aad_base.trim_end_matches('/'),
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD"
        },
        "microsoftGraphResourceId": format!("{}/", arm_base.trim_end_matches('/')),
        "suffixes": { "keyVaultDns": "vault.azure.net" }
    })
}

/// Answers `GET /metadata/endpoints`: 400 `MissingApiVersionParameter` without an api-version, 405
/// for other methods, else the document.
pub fn handle(
    st: &RestState,
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    if *method != Method::GET {
        let body = json!({ "error": { "code": "MethodNotAllowed", "message": format!("The requested resource does not support http method '{method}'.") } });
        return (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response();
    }
    let Some(api) = super::api_version(query) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(crate::error::ArmError::MissingApiVersion.body()),
        )
            .into_response();
    };
    let login = LOGIN_ENDPOINT
        .get()
        .map(String::as_str)
        .unwrap_or_else(|| st.validator.aad_url());
    let doc = document(&super::base_url(&st.arm, headers), login);
    if api.as_str() < "2022-09-01" {
        return (StatusCode::OK, Json(json!([doc]))).into_response();
    }
    (StatusCode::OK, Json(doc)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_path_ignores_case_and_extra_slashes() {
        assert!(is_metadata_path("//metadata/endpoints"));
        assert!(is_metadata_path("/Metadata/Endpoints/"));
        assert!(!is_metadata_path("/metadata"));
    }

    #[test]
    fn document_points_at_misim() {
        let d = document("https://127.0.0.1:7706", "https://127.0.0.1:7705/");
        assert_eq!(d["resourceManager"], "https://127.0.0.1:7706/");
        assert_eq!(
            d["authentication"]["loginEndpoint"],
            "https://127.0.0.1:7705"
        );
        assert_eq!(
            d["authentication"]["audiences"][0],
            "https://management.core.windows.net/"
        );
        assert_eq!(d["microsoftGraphResourceId"], "https://127.0.0.1:7706/");
    }
}
