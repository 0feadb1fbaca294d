//! Access-token claims and the token endpoint's success body, v1 and v2
//! (<https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference>,
//! <https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>).

use base64::Engine;
use serde_json::{json, Value};

use crate::model::ServicePrincipal;

/// Entra back-dates `iat`/`nbf` by 5 minutes (v1 fixture: `expires_on - not_before = 3900` for 3599 s).
pub const BACKDATE_SECS: i64 = 300;

/// Token endpoint flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `/{tenant}/oauth2/token`: `resource=`, string values, iss `https://sts.windows.net/{tid}/`.
    V1,
    /// `/{tenant}/oauth2/v2.0/token`: `scope=<res>/.default`, integer values,
    /// iss `https://login.microsoftonline.com/{tid}/v2.0`.
    V2,
}

/// v1 issuer: `https://sts.windows.net/{tid}/`.
pub fn issuer_v1(tenant_id: &str) -> String {
    format!("https://sts.windows.net/{tenant_id}/")
}

/// v2 issuer: `https://login.microsoftonline.com/{tid}/v2.0`.
pub fn issuer_v2(tenant_id: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant_id}/v2.0")
}

/// What goes into one access token.
pub struct TokenFacts<'a> {
    /// Endpoint version.
    pub version: Version,
    /// The principal the token is for.
    pub principal: &'a ServicePrincipal,
    /// The audience: the resource as requested (v1) or the scope without `/.default` (v2).
    pub audience: &'a str,
    /// Issue time, epoch seconds (before back-dating).
    pub now: i64,
    /// Lifetime from `now`, seconds.
    pub lifetime_secs: i64,
    /// The `xms_az_rid` form parameter, if sent (user-assigned identities: the VM's resource ID).
    pub az_rid: Option<&'a str>,
}

/// Resources whose Entra application accepts v1 access tokens only (`accessTokenAcceptedVersion`
/// unset): Azure Resource Manager. Entra issues such a resource v1-shaped tokens (issuer
/// `https://sts.windows.net/{tid}/`, `appid`, `ver` 1.0) whichever endpoint was asked, so a token
/// from `/oauth2/v2.0/token` for `https://management.azure.com/.default` is a v1 token
/// (Microsoft identity platform, "Access tokens", token formats:
/// <https://learn.microsoft.com/en-us/entra/identity-platform/access-tokens#token-formats>).
pub const V1_ONLY_RESOURCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.core.windows.net",
];

/// True when `audience` (with or without trailing slash, any case) only accepts v1 tokens.
pub fn accepts_v1_only(audience: &str) -> bool {
    let a = audience.trim_end_matches('/');
    V1_ONLY_RESOURCES.iter().any(|r| r.eq_ignore_ascii_case(a))
}

fn opaque(len: usize) -> String {
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    bytes.truncate(len);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenFacts<'_> {
    /// `exp`, epoch seconds (saturating: a clock near the end of time cannot overflow it).
    pub fn expires_on(&self) -> i64 {
        self.now.saturating_add(self.lifetime_secs)
    }

    /// `iat` = `nbf`, epoch seconds.
    pub fn not_before(&self) -> i64 {
        self.now.saturating_sub(BACKDATE_SECS)
    }

    /// The shape of the token itself: v1 for a resource that accepts only v1 tokens (ARM), else
    /// the endpoint's version. The response body keeps the endpoint's shape either way.
    pub fn token_version(&self) -> Version {
        if accepts_v1_only(self.audience) {
            Version::V1
        } else {
            self.version
        }
    }

    /// The claim set. v1: `aud iss iat nbf exp aio appid appidacr idp idtyp oid sub tid uti ver
    /// xms_mirid [xms_az_rid]`; v2 swaps `appid`/`appidacr` for `azp`/`azpacr` and has ver "2.0".
    /// The shape follows [`TokenFacts::token_version`].
    pub fn claims(&self) -> Value {
        let sp = self.principal;
        let tid = &sp.tenant_id;
        let iss = match self.token_version() {
            Version::V1 => issuer_v1(tid),
            Version::V2 => issuer_v2(tid),
        };
        let mut c = json!({
            "aud": self.audience,
            "iss": iss,
            "iat": self.not_before(),
            "nbf": self.not_before(),
            "exp": self.expires_on(),
            "aio": opaque(48),
            "idp": iss,
            "idtyp": "app",
            "oid": sp.object_id,
            "sub": sp.object_id,
            "tid": tid,
            "uti": opaque(16),
            "xms_mirid": sp.msi_resource_id,
        });
        let Some(obj) = c.as_object_mut() else {
            return c;
        };
        match self.token_version() {
            Version::V1 => {
                obj.insert("appid".into(), sp.app_id.clone().into());
                obj.insert("appidacr".into(), "2".into());
                obj.insert("ver".into(), "1.0".into());
            }
            Version::V2 => {
                obj.insert("azp".into(), sp.app_id.clone().into());
                obj.insert("azpacr".into(), "2".into());
                obj.insert("ver".into(), "2.0".into());
            }
        }
        if let Some(rid) = self.az_rid.filter(|r| !r.is_empty()) {
            obj.insert("xms_az_rid".into(), rid.into());
        }
        c
    }

    /// The success body: v1 all strings (`token_type expires_in ext_expires_in expires_on not_before
    /// resource access_token`), v2 integers (`token_type expires_in ext_expires_in access_token`).
    pub fn response(&self, access_token: String) -> Value {
        let expires_in = self.lifetime_secs;
        match self.version {
            Version::V1 => json!({
                "token_type": "Bearer",
                "expires_in": expires_in.to_string(),
                "ext_expires_in": expires_in.to_string(),
                "expires_on": self.expires_on().to_string(),
                "not_before": self.not_before().to_string(),
                "resource": self.audience,
                "access_token": access_token,
            }),
            Version::V2 => json!({
                "token_type": "Bearer",
                "expires_in": expires_in,
                "ext_expires_in": expires_in,
                "access_token": access_token,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp() -> ServicePrincipal {
        ServicePrincipal {
            tenant_id: "t".into(),
            object_id: "o".into(),
            app_id: "a".into(),
            display_name: "d".into(),
            msi_resource_id:
                "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/v"
                    .into(),
            is_explicit: false,
            key_credentials: vec![],
        }
    }

    #[test]
    fn arm_tokens_are_v1_shaped_from_the_v2_endpoint_too() {
        let p = sp();
        let f = TokenFacts {
            version: Version::V2,
            principal: &p,
            audience: "https://management.azure.com",
            now: 1000,
            lifetime_secs: 60,
            az_rid: None,
        };
        assert_eq!(f.token_version(), Version::V1);
        let c = f.claims();
        assert_eq!(
            (c["iss"].as_str(), c["appid"].as_str(), c["ver"].as_str()),
            (Some("https://sts.windows.net/t/"), Some("a"), Some("1.0"))
        );
        assert!(c.get("azp").is_none());
        assert_eq!(f.response("x".into())["expires_in"], 60, "v2 response body");
        let vault = TokenFacts {
            audience: "https://vault.azure.net",
            ..f
        };
        assert_eq!(vault.token_version(), Version::V2);
    }

    #[test]
    fn v1_and_v2_claims_differ_in_issuer_client_claims_and_version() {
        let p = sp();
        let f = TokenFacts {
            version: Version::V1,
            principal: &p,
            audience: "r",
            now: 1000,
            lifetime_secs: 60,
            az_rid: None,
        };
        let c = f.claims();
        assert_eq!(
            (c["iss"].as_str(), c["appid"].as_str(), c["ver"].as_str()),
            (Some("https://sts.windows.net/t/"), Some("a"), Some("1.0"))
        );
        assert_eq!(
            (c["iat"].as_i64(), c["exp"].as_i64()),
            (Some(700), Some(1060))
        );
        assert!(c.get("xms_az_rid").is_none());
        assert_eq!(f.response("x".into())["expires_on"], "1060");
        let f = TokenFacts {
            version: Version::V2,
            az_rid: Some("vm"),
            ..f
        };
        let c = f.claims();
        assert_eq!(
            (c["azp"].as_str(), c["azpacr"].as_str(), c["ver"].as_str()),
            (Some("a"), Some("2"), Some("2.0"))
        );
        assert!(c.get("appid").is_none());
        assert_eq!(c["xms_az_rid"], "vm");
        assert_eq!(f.response("x".into())["expires_in"], 60);
    }

    #[test]
    fn times_saturate_at_the_ends_of_the_clock() {
        let p = sp();
        let f = TokenFacts {
            version: Version::V1,
            principal: &p,
            audience: "r",
            now: i64::MAX - 10,
            lifetime_secs: 86_399,
            az_rid: None,
        };
        assert_eq!(f.expires_on(), i64::MAX);
        assert_eq!(f.claims()["exp"].as_i64(), Some(i64::MAX));
        let f = TokenFacts { now: i64::MIN, ..f };
        assert_eq!(f.not_before(), i64::MIN);
    }
}
