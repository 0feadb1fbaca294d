//! The legacy VM extension's token endpoint: `GET /oauth2/token?resource=…[&client_id=…|&object_id=…]`
//! with `Metadata: true` and no `api-version`, on the VM's localhost port (default 50342). The success
//! body is the one of the migration guide's example (all values strings, `refresh_token` empty);
//! errors follow the token how-to's extension table ([`ImdsError::extension_http`]). The extension has
//! its own token cache and no throttling (it runs on the VM).
//!
//! - migration guide: <https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>
//! - token how-to: <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>

use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use tracing::{debug, warn};

use super::query::Query;
use super::{Incoming, VmCtx};
use crate::error::{ImdsError, Result};
use crate::extension::cache_vm;
use crate::selection::{select, Selector};
use crate::vm_disk::VmDisk;

/// The extension's listener (own or shared): unknown callers get 401 `unknown_source`.
pub(crate) async fn dispatch(Incoming(caller, method, uri, headers): Incoming) -> Response {
    let ctx = match caller {
        Ok(caller) => caller.ctx,
        Err(_) => {
            debug!(
                path = uri.path(),
                "vm extension request from an unknown source"
            );
            let (status, body) =
                ImdsError::UnknownSource(request_uri(&uri, &headers)).extension_http("");
            return json(status, &body);
        }
    };
    match handle(&ctx, &method, &uri, &headers).await {
        Ok(response) => response,
        Err(e) => {
            let disk = VmDisk::of(&ctx.state.data_dir, &ctx.vm.snapshot());
            let log = disk.log_file();
            let (status, body) = e.extension_http(&log.display().to_string());
            if status.is_server_error() {
                warn!(vm = %ctx.vm.key, error = %e, "vm extension request failed");
                disk.log(format!("{} error: {e}", ctx.state.tokens.clock.now()))
                    .await;
            } else {
                debug!(vm = %ctx.vm.key, path = uri.path(), error = %e, "vm extension request rejected");
            }
            json(status, &body)
        }
    }
}

async fn handle(ctx: &VmCtx, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Response> {
    let record = ctx.vm.snapshot();
    if record.extension.is_none() || !uri.path().eq_ignore_ascii_case("/oauth2/token") {
        return Err(ImdsError::UnknownSource(request_uri(uri, headers)));
    }
    if method != Method::GET {
        return Err(ImdsError::MethodNotAllowed);
    }
    super::check_metadata_header(headers)?;
    let query = Query::parse(uri.query())?;
    let resource = query
        .get("resource")
        .filter(|r| !r.is_empty())
        .ok_or(ImdsError::MissingQuery("resource"))?;
    let selector = match (query.get("client_id"), query.get("object_id")) {
        (None, None) => Selector::Default,
        (Some(c), None) => Selector::ClientId(c.to_string()),
        (None, Some(o)) => Selector::ObjectId(o.to_string()),
        (Some(_), Some(_)) => return Err(ImdsError::ConflictingSelectors),
    };
    let held = select(&record.identities, &selector)?;
    let (vm, identity) = (&record.vm.resource_id, &held.identity);
    debug!(step = 5, vm = %vm, identity = %identity.msi_res_id, client_id = %identity.client_id, resource, "vm requested a token from the vm extension");
    let cache = cache_vm(&ctx.vm.key);
    // Step 5 in the flow's trace, as for IMDS (misim_core::telemetry).
    let step = misim_core::telemetry::step_span(5, "vm extension");
    misim_core::telemetry::record_vm(&step, vm.as_str());
    step.record("identity", identity.msi_res_id.as_str());
    step.record("resource", resource);
    let obtained = ctx
        .state
        .tokens
        .obtain(&cache, vm, held, resource, false, "vm extension");
    let token = tracing::Instrument::instrument(obtained, step.clone()).await;
    misim_core::telemetry::record_outcome(&step, &token);
    let token = token?;
    let now = ctx.state.tokens.clock.now();
    let body = json!({
        "access_token": token.access_token,
        "refresh_token": "",
        "expires_in": token.expires_on.saturating_sub(now).max(0).to_string(),
        "expires_on": token.expires_on.to_string(),
        "not_before": token.not_before.to_string(),
        "resource": resource,
        "token_type": token.token_type,
    });
    Ok(json(StatusCode::OK, &body))
}

/// The request URI as the caller wrote it (`http://<Host header><path>?<query>`), for "Unknown Source
/// <URI>".
fn request_uri(uri: &Uri, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("http://{host}{path}")
}

/// A JSON answer with `Content-Type: application/json` (the migration guide's example response).
fn json(status: StatusCode, body: &Value) -> Response {
    super::json_as(status, body, "application/json")
}
