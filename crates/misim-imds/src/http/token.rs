//! `GET /metadata/identity/oauth2/token` (steps 5 and 6) and `GET /metadata/identity/info`.
//!
//! Checks in this order (docs/imds.md): api-version, resource, selector, then identity selection
//! ([`crate::selection`]), then the token cache, and only on a miss Azure AD. The answer has the
//! documented shape (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>,
//! <https://github.com/Azure/azure-rest-api-specs/blob/ea83a2a3e90ca3f0420e9d0ef55a811523541aba/specification/imds/data-plane/InstanceMetadataService/stable/2023-07-01/imds.json>):
//! every value a JSON string, `expires_in` recomputed from `expires_on` on cache hits.

use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use tracing::debug;

use super::query::Query;
use super::{json_response, VmCtx};

use crate::error::{ImdsError, Result};
use crate::model::IdentityKind;
use crate::selection::{select, Selector};
use crate::versions;

/// The identity selector of `query`; `msi_res_id` and its older name `mi_res_id` are the same selector
/// (<https://github.com/Azure/aad-pod-identity/blob/07b01ea01e79bcc594ea0b34f9cd8a2d1fe73a9f/pkg/nmi/server/server.go>).
///
/// # Errors
/// [`ImdsError::ConflictingSelectors`] when more than one is given.
pub fn selector(query: &Query) -> Result<Selector> {
    let mut found = Vec::new();
    if let Some(v) = query.get("client_id") {
        found.push(Selector::ClientId(v.to_string()));
    }
    if let Some(v) = query.get("object_id") {
        found.push(Selector::ObjectId(v.to_string()));
    }
    for name in ["msi_res_id", "mi_res_id"] {
        if let Some(v) = query.get(name) {
            found.push(Selector::ResourceId(v.to_string()));
        }
    }
    match found.len() {
        0 => Ok(Selector::Default),
        1 => Ok(found.remove(0)),
        _ => Err(ImdsError::ConflictingSelectors),
    }
}

fn bypass_cache(query: &Query) -> Result<bool> {
    match query.get("bypass_cache") {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(_) => Err(ImdsError::InvalidQueryValue("bypass_cache")),
    }
}

/// Answers a token request for the VM of `ctx`.
///
/// # Errors
/// The IMDS token errors (docs/imds.md): missing/invalid `api-version`, missing `resource`, conflicting selectors, bad
/// `bypass_cache`, Identity not found / Multiple user assigned identities, AAD `invalid_resource`,
/// AAD failure.
pub async fn token(ctx: &VmCtx, query: &Query) -> Result<Response> {
    versions::check(query.get("api-version"), versions::IDENTITY_MINIMUM)?;
    let resource = query
        .get("resource")
        .filter(|r| !r.is_empty())
        .ok_or(ImdsError::MissingQuery("resource"))?;
    let selector = selector(query)?;
    let bypass = bypass_cache(query)?;
    let record = ctx.vm.snapshot();
    // Identities still propagating are not (or still) served (crate::propagation).
    let tokens = &ctx.state.tokens;
    let identities =
        tokens
            .propagating
            .effective(&ctx.vm.key, &record.identities, tokens.clock.now());
    let held = select(&identities, &selector)?;
    let (vm, identity) = (&record.vm.resource_id, &held.identity);
    // Per request: DEBUG, so a cached token costs no log line at the default level; a cache
    // miss logs step 5 at INFO in `obtain` (issue #18).
    debug!(step = 5, vm = %vm, identity = %identity.msi_res_id, client_id = %identity.client_id, resource, "vm requested a token from imds");

    // Step 5 in the flow's trace; step 6 (Azure AD) continues it (misim_core::telemetry).
    let step = misim_core::telemetry::step_span(5, "imds");
    misim_core::telemetry::record_vm(&step, vm.as_str());
    step.record("identity", identity.msi_res_id.as_str());
    step.record("resource", resource);
    let obtained = tokens.obtain(&ctx.vm.key, vm, held, resource, bypass, "imds");
    let token = tracing::Instrument::instrument(obtained, step.clone()).await;
    misim_core::telemetry::record_outcome(&step, &token);
    let token = token?;

    let now = tokens.clock.now();
    let echo = selector.echo();
    let echoed = |name| echo.filter(|(n, _)| *n == name).map(|(_, v)| v);
    let body = TokenBody {
        access_token: &token.access_token,
        client_id: &identity.client_id,
        expires_in: token.expires_on.saturating_sub(now).max(0),
        expires_on: token.expires_on,
        ext_expires_in: token.ext_expires_in,
        msi_res_id: echoed("msi_res_id"),
        not_before: token.not_before,
        object_id: echoed("object_id"),
        resource,
        token_type: &token.token_type,
    };
    Ok(super::json_body(StatusCode::OK, &body))
}

/// IMDS's token answer: every value a JSON string, keys in this order, the selector echoed
/// (`msi_res_id` / `object_id`) when given (IMDS REST spec 2023-07-01).
#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    client_id: &'a str,
    #[serde(serialize_with = "as_string")]
    expires_in: i64,
    #[serde(serialize_with = "as_string")]
    expires_on: i64,
    #[serde(serialize_with = "as_string")]
    ext_expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    msi_res_id: Option<&'a str>,
    #[serde(serialize_with = "as_string")]
    not_before: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_id: Option<&'a str>,
    resource: &'a str,
    token_type: &'a str,
}

/// A number as a JSON string, without an intermediate `String`.
fn as_string<S: serde::Serializer>(n: &i64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(n)
}

/// `GET /metadata/identity/info`: `{"tenantId": …}` of the system-assigned identity (IMDS REST spec), or of the
/// first identity when the VM has only user-assigned ones.
///
/// # Errors
/// api-version errors; [`ImdsError::IdentityNotFound`] when the VM has no identity.
pub fn info(ctx: &VmCtx, query: &Query) -> Result<Response> {
    versions::check(query.get("api-version"), versions::IDENTITY_MINIMUM)?;
    let record = ctx.vm.snapshot();
    let identities = &record.identities;
    let chosen = identities
        .iter()
        .find(|h| h.identity.kind == IdentityKind::SystemAssigned)
        .or_else(|| identities.first())
        .ok_or(ImdsError::IdentityNotFound)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "tenantId": chosen.identity.tenant_id }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_selector_at_most() {
        let q = |s: &str| Query::parse(Some(s)).unwrap();
        assert_eq!(selector(&q("resource=r")).unwrap(), Selector::Default);
        assert_eq!(
            selector(&q("client_id=c")).unwrap(),
            Selector::ClientId("c".into())
        );
        assert_eq!(
            selector(&q("mi_res_id=x")).unwrap(),
            Selector::ResourceId("x".into())
        );
        assert!(matches!(
            selector(&q("client_id=c&object_id=o")),
            Err(ImdsError::ConflictingSelectors)
        ));
        assert!(matches!(
            selector(&q("msi_res_id=a&mi_res_id=a")),
            Err(ImdsError::ConflictingSelectors)
        ));
    }

    #[test]
    fn bypass_cache_accepts_only_true() {
        let q = |s: &str| Query::parse(Some(s)).unwrap();
        assert!(bypass_cache(&q("bypass_cache=true")).unwrap());
        assert!(!bypass_cache(&q("x=1")).unwrap());
        assert!(bypass_cache(&q("bypass_cache=no")).is_err());
    }
}
