//! The addresses of a running system, as printed by `misim up` and written to `DIR/endpoints.json`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Default data directory of `misim up` and of the commands that read its state.
pub const DEFAULT_DATA_DIR: &str = "misim-data";
/// Default directory of misim's CA (`DEFAULT_DATA_DIR/ca`).
pub const DEFAULT_CA_DIR: &str = "misim-data/ca";
/// Default directory of the admin client certificate `misim up` writes (`DEFAULT_CA_DIR/admin`).
pub const DEFAULT_ADMIN_CERT_DIR: &str = "misim-data/ca/admin";

/// Base port of `misim up`'s fixed default ports; each party's port is this plus a fixed offset.
pub const DEFAULT_BASE_PORT: u16 = 7700;

/// `127.0.0.1:{DEFAULT_BASE_PORT + offset}`: a party's default listen address.
pub fn default_listen(offset: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_BASE_PORT + offset))
}

/// `http://127.0.0.1:{DEFAULT_BASE_PORT + offset}`: where the other parties reach a party by default.
pub fn default_url(offset: u16) -> String {
    format!("http://{}", default_listen(offset))
}
/// Offset of ARM's gRPC API from the base port (default 7700).
pub const ARM_GRPC_OFFSET: u16 = 0;
/// Offset of ARM's REST surface (default 7701).
pub const ARM_REST_OFFSET: u16 = 1;
/// Offset of Azure AD's HTTP API (default 7702).
pub const AAD_HTTP_OFFSET: u16 = 2;
/// Offset of Azure AD's admin gRPC API (default 7703).
pub const AAD_GRPC_OFFSET: u16 = 3;
/// Offset of MSRP's gRPC API (default 7704).
pub const MSRP_GRPC_OFFSET: u16 = 4;
/// Offset of Azure AD's HTTPS API (default 7705): the same API as [`AAD_HTTP_OFFSET`] over TLS, with
/// discovery documents naming https URLs (what Azure SDK certificate credentials need).
pub const AAD_HTTPS_OFFSET: u16 = 5;
/// Offset of ARM's REST surface over TLS (default 7706), forwarded to [`ARM_REST_OFFSET`].
pub const ARM_REST_HTTPS_OFFSET: u16 = 6;
/// Offset of the Scenario gRPC service of `misim up` (default 7707).
pub const SCENARIO_GRPC_OFFSET: u16 = 7;
/// Offset of host N's agent gRPC API is this plus N (host-1: 7711).
pub const HOST_AGENT_OFFSET: u16 = 10;

/// Every endpoint of a running system (URLs with scheme, no trailing slash).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoints {
    /// ARM control-plane gRPC (what the CLI and tests drive); also `MISIM_ARM`.
    pub arm_grpc: String,
    /// ARM REST surface (the step-7 target, `https://management.azure.com` shapes).
    pub arm_rest: String,
    /// Azure AD HTTP: token endpoint, OpenID discovery, JWKS.
    pub aad: String,
    /// Azure AD over HTTPS (`https://…`), certificate from misim's CA ([`Endpoints::ca_file`]); use it
    /// as the authority of Azure SDK certificate credentials (`AZURE_AUTHORITY_HOST`).
    #[serde(default)]
    pub aad_https: String,
    /// ARM REST surface over HTTPS.
    #[serde(default)]
    pub arm_rest_https: String,
    /// misim's CA certificate (PEM) that clients must trust for the HTTPS endpoints
    /// (`REQUESTS_CA_BUNDLE`, `SSL_CERT_FILE`).
    #[serde(default)]
    pub ca_file: String,
    /// Azure AD admin gRPC.
    pub aad_grpc: String,
    /// MSRP gRPC.
    pub msrp_grpc: String,
    /// `misim.scenario.v1.Scenario` (runs scenario documents against this system); empty when
    /// not served.
    #[serde(default)]
    pub scenario_grpc: String,
    /// Host name → host agent gRPC.
    pub hosts: BTreeMap<String, String>,
    /// The default tenant the default subscription trusts (filled once ARM has bootstrapped).
    #[serde(default)]
    pub tenant_id: String,
    /// The default subscription.
    #[serde(default)]
    pub subscription_id: String,
}

impl Endpoints {
    /// Pretty JSON, as written to `endpoints.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Number of hosts `misim up` starts by default.
pub const DEFAULT_HOSTS: u16 = 2;

/// Name of the file (in the data directory) listing every endpoint; removed when misim stops.
pub const ENDPOINTS_FILE: &str = "endpoints.json";

/// Directory (below the CA directory) of the admin certificate for debugging internal gRPC calls.
pub const ADMIN_CERT_DIR: &str = "admin";

/// Parses `START-END` (inclusive).
///
/// # Errors
/// When it is not two ports with START <= END.
pub fn parse_port_range(s: &str) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
    let bad = || anyhow::anyhow!("--vm-ports {s:?} is not START-END, e.g. 7800-8799");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_addresses_are_loopback_ports_from_the_base() {
        assert_eq!(
            default_listen(ARM_GRPC_OFFSET).to_string(),
            "127.0.0.1:7700"
        );
        assert_eq!(default_url(AAD_GRPC_OFFSET), "http://127.0.0.1:7703");
        assert_eq!(default_url(HOST_AGENT_OFFSET + 1), "http://127.0.0.1:7711");
    }
}
