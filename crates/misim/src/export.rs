//! `misim identity credential export`: the test-only way to get an identity's certificate and key out
//! of MSRP as PEM, so Azure SDK certificate credentials can be tried against misim's Azure AD.

use std::path::Path;

use anyhow::Context;
use misim_core::cert::{sha1_thumbprint_hex, to_pem};
use misim_proto::msrp::{msrp_client::MsrpClient, GetCredentialRequest};
use serde_json::{json, Value};

/// Fetches the credential of `resource_id` from MSRP at `msrp_url` (mutual TLS with the admin
/// certificate in `cert_dir`) and writes certificate + PKCS#8
/// key as one PEM file at `out` (mode 0600 on Unix). Returns what to print.
///
/// # Errors
/// When MSRP is unreachable, does not know the identity, or the file cannot be written.
pub async fn export_pem(
    msrp_url: &str,
    cert_dir: &Path,
    resource_id: &str,
    out: &Path,
) -> anyhow::Result<Value> {
    let admin = misim_core::control::ControlTls::load(cert_dir).with_context(|| {
        format!(
            "MSRP answers only callers with a misim certificate: cannot load the admin certificate \
             from {} (misim up writes it to DATA_DIR/ca/admin; set --cert-dir or MISIM_ADMIN_CERT_DIR, \
             or make one with `misim certs issue --role admin`)",
            cert_dir.display()
        )
    })?;
    let channel = admin
        .endpoint(msrp_url)
        .map_err(|e| anyhow::anyhow!(e))?
        .connect()
        .await
        .with_context(|| format!("cannot reach MSRP at {msrp_url} (set --msrp or MISIM_MSRP)"))?;
    let mut msrp = MsrpClient::new(channel);
    let cred = msrp
        .get_credential(GetCredentialRequest {
            resource_id: resource_id.to_string(),
            host: "misim-cli-export".into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("MSRP: {}", s.message()))?
        .into_inner();
    let identity = cred
        .identity
        .context("MSRP returned a credential without its identity")?;
    let pem = format!(
        "{}{}",
        to_pem("CERTIFICATE", &cred.certificate_der),
        to_pem("PRIVATE KEY", &cred.private_key_pkcs8_der)
    );
    misim_core::fsperm::write_private(out, pem.as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(json!({
        "resourceId": identity.resource_id,
        "tenantId": identity.tenant_id,
        "clientId": identity.client_id,
        "principalId": identity.principal_id,
        "thumbprint": sha1_thumbprint_hex(&cred.certificate_der),
        "path": out.display().to_string(),
    }))
}
