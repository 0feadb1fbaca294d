//! The control plane's mutual TLS: one certificate per party instance, issued by misim's CA and
//! carrying the party's role, and the per-call check of the caller's role.
//!
//! In Azure, the internal services behind managed identities only answer authenticated callers: the
//! host agent accepts configuration only from the fabric, and a host receives the credentials of the
//! identities of the VMs placed on it, nothing else ("the local managed identity … holds only the
//! credentials of its own VM's identities",
//! <https://learn.microsoft.com/en-us/entra/identity/managed-identities-azure-resources/how-managed-identities-work-vm>).
//! misim models that with mTLS on every inter-party gRPC call:
//!
//! - each party instance holds a certificate ([`ControlTls`]) whose subject alternative names carry
//!   its role as a URI `spiffe://misim.local/<role>` ([`Role`]), plus the DNS names/IPs it is reached by;
//! - servers ask for a client certificate (optional at the TLS layer, so a caller without one gets a
//!   clear gRPC `UNAUTHENTICATED` instead of a failed handshake) and each RPC names the roles it
//!   accepts ([`ControlAuth::check`]); anything else is `PERMISSION_DENIED` with the caller and the rule;
//! - the `admin` role is for people debugging a local system (`grpcurl` with the admin certificate).
//!
//! Certificate validity uses wall-clock time (TLS peers check it against their own clocks).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::tls::{LocalCa, TlsError, LOOPBACK_NAMES};

/// Prefix of the role URI in a party certificate's subject alternative names.
pub const ROLE_URI_PREFIX: &str = "spiffe://misim.local/";
/// File name of a party's certificate (PEM) in its control TLS directory.
pub const CERT_FILE: &str = "cert.pem";
/// File name of a party's private key (PKCS#8 PEM, mode 0600) in its control TLS directory.
pub const KEY_FILE: &str = "key.pem";
/// File name of the CA certificate (PEM) in a party's control TLS directory.
pub const CA_FILE: &str = "ca.pem";
/// Validity of a party certificate, seconds (397 days).
const PARTY_VALIDITY_SECS: i64 = 397 * 86_400;

/// Who a control-plane caller is: the role its certificate carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Azure Resource Manager: configures hosts, creates and deletes identities.
    Arm,
    /// The Managed Identity Resource Provider: manages service principals and key credentials.
    Msrp,
    /// Azure AD.
    Aad,
    /// One host (agent + IMDS), by name.
    Host(String),
    /// A person debugging a local system: may call every internal RPC.
    Admin,
}

/// The kind of a [`Role`], for rules that do not care about a host's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    /// [`Role::Arm`].
    Arm,
    /// [`Role::Msrp`].
    Msrp,
    /// [`Role::Aad`].
    Aad,
    /// Any [`Role::Host`].
    Host,
    /// [`Role::Admin`].
    Admin,
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoleKind::Arm => "arm",
            RoleKind::Msrp => "msrp",
            RoleKind::Aad => "aad",
            RoleKind::Host => "host:*",
            RoleKind::Admin => "admin",
        })
    }
}

impl Role {
    /// Parses `arm`, `msrp`, `aad`, `admin` or `host:NAME`.
    ///
    /// # Errors
    /// A message naming the accepted forms.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "arm" => Ok(Role::Arm),
            "msrp" => Ok(Role::Msrp),
            "aad" => Ok(Role::Aad),
            "admin" => Ok(Role::Admin),
            _ => match s.strip_prefix("host:") {
                Some(name) if valid_host_name(name) => Ok(Role::Host(name.to_string())),
                _ => Err(format!(
                    "unknown role {s:?}: use arm, msrp, aad, admin or host:NAME (NAME of letters, digits, '-', '_', '.')"
                )),
            },
        }
    }

    /// The role's kind.
    pub fn kind(&self) -> RoleKind {
        match self {
            Role::Arm => RoleKind::Arm,
            Role::Msrp => RoleKind::Msrp,
            Role::Aad => RoleKind::Aad,
            Role::Host(_) => RoleKind::Host,
            Role::Admin => RoleKind::Admin,
        }
    }

    /// The URI the certificate carries, e.g. `spiffe://misim.local/host/host-1`.
    pub fn uri(&self) -> String {
        match self {
            Role::Host(name) => format!("{ROLE_URI_PREFIX}host/{name}"),
            other => format!("{ROLE_URI_PREFIX}{other}"),
        }
    }

    /// Parses a role URI made by [`Role::uri`].
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(ROLE_URI_PREFIX)?;
        match rest.strip_prefix("host/") {
            Some(name) if valid_host_name(name) => Some(Role::Host(name.to_string())),
            Some(_) => None,
            None => Role::parse(rest)
                .ok()
                .filter(|r| r.kind() != RoleKind::Host),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Arm => f.write_str("arm"),
            Role::Msrp => f.write_str("msrp"),
            Role::Aad => f.write_str("aad"),
            Role::Admin => f.write_str("admin"),
            Role::Host(name) => write!(f, "host:{name}"),
        }
    }
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// One party instance's control-plane credentials: its certificate and key (PEM) and the CA that
/// every party trusts.
#[derive(Clone)]
pub struct ControlTls {
    role: Role,
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
}

impl fmt::Debug for ControlTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlTls")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl ControlTls {
    /// Issues a certificate for `role` from `ca` (ECDSA P-256, `clientAuth` + `serverAuth`, valid 397
    /// days), naming [`LOOPBACK_NAMES`] plus `names` (DNS names or IPs the party is reached by).
    ///
    /// # Errors
    /// [`TlsError::Certificate`] for a name that is neither a DNS name nor an IP address.
    pub fn issue(ca: &LocalCa, role: Role, names: &[String]) -> Result<Self, TlsError> {
        let mut all: Vec<String> = LOOPBACK_NAMES.iter().map(|s| s.to_string()).collect();
        for n in names {
            let n = n.trim();
            if !n.is_empty() && !all.iter().any(|m| m.eq_ignore_ascii_case(n)) {
                all.push(n.to_string());
            }
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(all)?;
        params
            .subject_alt_names
            .push(SanType::URI(role.uri().try_into()?));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, role.to_string());
        dn.push(DnType::OrganizationName, "misim control plane");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(PARTY_VALIDITY_SECS);
        let cert = params.signed_by(&key, &ca.issuer())?;
        Ok(ControlTls {
            role,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: ca.ca_pem().to_string(),
        })
    }

    /// Loads `cert.pem`, `key.pem` and `ca.pem` from `dir`; the role is read from the certificate.
    ///
    /// # Errors
    /// [`TlsError::Io`] when a file cannot be read, [`TlsError::BadCa`] when the certificate does
    /// not parse or carries no misim role.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let read = |name: &str| -> Result<String, TlsError> {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Io { path, source })
        };
        let cert_pem = read(CERT_FILE)?;
        let key_pem = read(KEY_FILE)?;
        let ca_pem = read(CA_FILE)?;
        let der =
            pem_der(&cert_pem).ok_or_else(|| bad(dir.join(CERT_FILE), "not a PEM certificate"))?;
        let role = role_of(&der).ok_or_else(|| {
            bad(
                dir.join(CERT_FILE),
                "carries no misim role (make it with `misim certs issue`)",
            )
        })?;
        Ok(ControlTls {
            role,
            cert_pem,
            key_pem,
            ca_pem,
        })
    }

    /// Writes `cert.pem`, `key.pem` (0600) and `ca.pem` into `dir` (created 0700), replacing them.
    ///
    /// # Errors
    /// [`TlsError::Io`] when the directory or a file cannot be written.
    pub fn write(&self, dir: &Path) -> Result<(), TlsError> {
        let io = |path: PathBuf| move |source| TlsError::Io { path, source };
        crate::fsperm::create_private_dir(dir).map_err(io(dir.to_path_buf()))?;
        crate::fsperm::write_private(&dir.join(KEY_FILE), self.key_pem.as_bytes())
            .map_err(io(dir.join(KEY_FILE)))?;
        std::fs::write(dir.join(CERT_FILE), &self.cert_pem).map_err(io(dir.join(CERT_FILE)))?;
        std::fs::write(dir.join(CA_FILE), &self.ca_pem).map_err(io(dir.join(CA_FILE)))?;
        Ok(())
    }

    /// The role this certificate carries.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The party certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The party's private key, PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The TLS config of a gRPC server: this certificate, and client certificates from misim's CA
    /// requested but optional at the TLS layer (the RPC answers `UNAUTHENTICATED` without one).
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
            .timeout(Duration::from_secs(10))
    }

    /// The TLS config of a gRPC client: trusts misim's CA only and presents this certificate.
    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// A lazily connected endpoint for a peer at `url` with this identity ([`peer_endpoint`]).
    ///
    /// # Errors
    /// A message when the URL is malformed or the TLS config is refused.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        peer_endpoint(Some(self), url)
    }
}

/// Connect timeout of internal peer endpoints.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Per-call timeout of internal peer endpoints.
const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The endpoint of an internal peer at `url`: mutual TLS with `control`'s certificate when given
/// (`http://` URLs are switched to `https://`, so peer flags may keep the plain scheme), plain
/// otherwise; 3 s connect timeout, 30 s per call.
///
/// # Errors
/// A message when the URL is malformed or the TLS config is refused.
pub fn peer_endpoint(control: Option<&ControlTls>, url: &str) -> Result<Endpoint, String> {
    let url = match (control, url.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => url.to_string(),
    };
    let mut endpoint =
        Endpoint::from_shared(url.clone()).map_err(|e| format!("invalid peer url '{url}': {e}"))?;
    if let Some(c) = control {
        endpoint = endpoint
            .tls_config(c.client_tls())
            .map_err(|e| format!("tls config for '{url}': {e}"))?;
    }
    Ok(endpoint
        .connect_timeout(PEER_CONNECT_TIMEOUT)
        .timeout(PEER_CALL_TIMEOUT))
}

fn bad(path: PathBuf, reason: &str) -> TlsError {
    TlsError::BadCa {
        path,
        reason: reason.to_string(),
    }
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}

/// The misim role a DER certificate carries in its subject alternative names, if any.
pub fn role_of(der: &[u8]) -> Option<Role> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => Role::from_uri(uri),
        _ => None,
    })
}

/// How a gRPC server checks its callers.
#[derive(Clone, Debug)]
pub enum ControlAuth {
    /// Every RPC requires a client certificate from misim's CA with an accepted role.
    Enforce,
    /// No checks: only for unit tests of one party with fake peers on loopback.
    Off,
}

impl ControlAuth {
    /// [`ControlAuth::Enforce`] when the party has control TLS, [`ControlAuth::Off`] otherwise.
    pub fn for_config(control: Option<&ControlTls>) -> Self {
        match control {
            Some(_) => ControlAuth::Enforce,
            None => ControlAuth::Off,
        }
    }

    /// Checks that the caller of `rpc` has one of the `allowed` roles ([`RoleKind::Admin`] is always
    /// allowed). Returns the caller's role (`None` when checks are off).
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when the call carries no certificate of misim's CA with a role,
    /// `PERMISSION_DENIED` naming the caller and the rule when the role is not allowed.
    pub fn check<T>(
        &self,
        req: &Request<T>,
        rpc: &str,
        allowed: &[RoleKind],
    ) -> Result<Option<Role>, Status> {
        if matches!(self, ControlAuth::Off) {
            return Ok(None);
        }
        let role = caller(req, rpc)?;
        if role.kind() == RoleKind::Admin || allowed.contains(&role.kind()) {
            return Ok(Some(role));
        }
        let rule = allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(caller = %role, rpc, "refused control-plane call");
        Err(Status::permission_denied(format!(
            "caller {role} may not call {rpc}: only {rule} may"
        )))
    }
}

/// The role of the caller of a gRPC request, from its TLS client certificate.
///
/// # Errors
/// `UNAUTHENTICATED` when the connection is not TLS, carries no client certificate, or the
/// certificate has no misim role.
pub fn caller<T>(req: &Request<T>, rpc: &str) -> Result<Role, Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        Status::unauthenticated(format!(
            "{rpc} requires a client certificate from misim's CA (mutual TLS); \
             for debugging use the admin certificate (`misim certs issue --role admin`)"
        ))
    })?;
    let leaf = certs.first().ok_or_else(|| {
        Status::unauthenticated(format!(
            "{rpc}: the connection presented no client certificate"
        ))
    })?;
    role_of(leaf.as_ref()).ok_or_else(|| {
        Status::unauthenticated(format!(
            "{rpc}: the client certificate carries no misim role"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_uris_and_certificates() {
        for r in [
            Role::Arm,
            Role::Msrp,
            Role::Aad,
            Role::Admin,
            Role::Host("host-1".into()),
        ] {
            assert_eq!(Role::from_uri(&r.uri()), Some(r.clone()));
            assert_eq!(Role::parse(&r.to_string()), Ok(r.clone()));
        }
        assert!(Role::parse("host:").is_err());
        assert!(Role::parse("host:a/b").is_err());
        assert!(Role::parse("root").is_err());
        assert_eq!(Role::from_uri("spiffe://misim.local/host"), None);
        assert_eq!(Role::from_uri("spiffe://other/arm"), None);

        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
        let tls = ControlTls::issue(&ca, Role::Host("host-2".into()), &["host-2".into()]).unwrap();
        let out = dir.path().join("host-2");
        tls.write(&out).unwrap();
        let loaded = ControlTls::load(&out).unwrap();
        assert_eq!(loaded.role(), &Role::Host("host-2".into()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&out.join(KEY_FILE)), 0o600);
            assert_eq!(mode(&out), 0o700);
        }
    }

    #[test]
    fn a_certificate_without_a_role_is_refused_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
        let tls = ControlTls::issue(&ca, Role::Arm, &[]).unwrap();
        let out = dir.path().join("x");
        tls.write(&out).unwrap();
        std::fs::write(out.join(CERT_FILE), ca.ca_pem()).unwrap();
        let err = ControlTls::load(&out).unwrap_err().to_string();
        assert!(err.contains("carries no misim role"), "{err}");
    }
}
