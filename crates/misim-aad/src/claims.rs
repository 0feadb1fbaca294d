//! Access-token claims and the token endpoint's success body, v1 and v2
//! (<https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference>,
//! <https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>).

use base64::Engine;
use serde_json::{json, Value};

use crate::model::ServicePrincipal;
pub use crate::resources::Version;

/// Entra back-dates `iat`/`nbf` by 5 minutes (v1 fixture: `expires_on - not_before = 3900` for 3599 s).
pub const BACKDATE_SECS: i64 = 300;

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
    /// The resource as requested: the `resource` value (v1) or the scope without `/.default` (v2).
    /// The token's `aud` derives from it ([`crate::resources::audience`]).
    pub audience: &'a str,
    /// Issue time, epoch seconds (before back-dating).
    pub now: i64,
    /// Lifetime from `now`, seconds.
    pub lifetime_secs: i64,
    /// The `xms_az_rid` form parameter, if sent (user-assigned identities: the VM's resource ID).
    pub az_rid: Option<&'a str>,
    /// The tenant's creation time, epoch seconds (`xms_tcdt`); 0 = unknown, claim omitted.
    pub tenant_created: i64,
}

/// `xms_act_fct` and `xms_sub_fct` of a managed identity's app-only token ("3 9" and "9 3" in a
/// real VM managed-identity token; the same claims appear in Microsoft's sample app token,
/// <https://learn.microsoft.com/entra/agent-id/identity-platform/agent-token-claims>).
pub const MI_ACT_FCT: &str = "3 9";
/// See [`MI_ACT_FCT`].
pub const MI_SUB_FCT: &str = "9 3";

/// True when `audience` (with or without trailing slash, any case) only accepts v1 tokens
/// (Azure Resource Manager, see [`crate::resources::FirstPartyResource::v1_only`]).
pub fn accepts_v1_only(audience: &str) -> bool {
    crate::resources::lookup(audience).is_some_and(|f| f.v1_only)
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 16);
    while bytes.len() < len {
        bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A GUID's 16 bytes in the mixed-endian layout Windows and .NET use (`Guid.ToByteArray`), which
/// is how Entra packs tenant and application IDs into `rh`; zeros for a non-GUID.
fn guid_bytes_le(guid: &str) -> [u8; 16] {
    uuid::Uuid::parse_str(guid).map_or([0; 16], |u| u.to_bytes_le())
}

/// `aio`: opaque, standard base64 of 105 bytes = 140 characters, starting like Entra's
/// (`AWQAm/8aAAAA…`).
pub fn aio() -> String {
    let mut bytes = vec![0x01, 0x64, 0x00, 0x9b, 0xff, 0x1a, 0x00, 0x00, 0x00];
    bytes.extend(random_bytes(96));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `rh`: opaque, `1.` + base64url of a 3-byte prefix, the tenant ID, the resource application
/// ID and a 5-byte suffix + `.` (a real VM token: `1.AL4AETKj8mrkkky4Ta_wbCzRP0ZIf3kAutdPukPawfj2MBMjAQC-AA.`,
/// whose middle decodes to its `tid` and ARM's application ID).
pub fn rh(tenant_id: &str, resource_app_id: Option<&str>) -> String {
    let r = random_bytes(2);
    let mut bytes = vec![0x00, r[0], 0x00];
    bytes.extend_from_slice(&guid_bytes_le(tenant_id));
    bytes.extend_from_slice(&guid_bytes_le(resource_app_id.unwrap_or("")));
    bytes.extend_from_slice(&[r[1], 0x01, 0x00, r[0], 0x00]);
    format!("1.{}.", b64url(&bytes))
}

/// `uti`: the token identifier, base64url of 16 bytes = 22 characters (e.g. `sdmF4KgzXUu6N0IKMbQBAA`).
pub fn uti() -> String {
    b64url(&random_bytes(16))
}

/// `xms_rd`: opaque, `0.42Lj` + base64url (a real token: `0.42LjYBJi2scoJMLBKSTwfsKT…`).
pub fn xms_rd() -> String {
    format!("0.42LjYBJi{}", b64url(&random_bytes(48)))
}

/// `xms_ftd`: opaque, base64url of 32 bytes + `0x01` + the issuing region's name
/// (a real token's decodes to `…\x01useast-dsms`).
pub fn xms_ftd() -> String {
    let mut bytes = random_bytes(32);
    bytes.push(0x01);
    bytes.extend_from_slice(b"useast-dsms");
    b64url(&bytes)
}

/// `xms_idrel`: two space-separated small integers, the first 7 for app-only tokens (`"7 4"`).
pub fn xms_idrel() -> String {
    format!("7 {}", random_bytes(1)[0] % 30 + 1)
}

/// Lower-cases the `resourceGroups` segment name of an ARM resource ID, as `xms_mirid` carries
/// it (`/subscriptions/{s}/resourcegroups/{Rg}/providers/Microsoft.Compute/virtualMachines/{Vm}`);
/// every other part keeps its casing.
pub fn mirid(resource_id: &str) -> String {
    resource_id
        .split('/')
        .enumerate()
        .map(|(i, seg)| {
            if i == 3 && seg.eq_ignore_ascii_case("resourcegroups") {
                "resourcegroups"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
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

    /// The claim set of a managed identity's app-only token, as Entra issues it
    /// (<https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference>):
    /// v1 `aud iss iat nbf exp aio appid appidacr idp idtyp oid rh sub tid uti ver xms_act_fct
    /// xms_ftd xms_idrel xms_mirid xms_rd xms_sub_fct xms_tcdt [xms_az_rid]`; v2 swaps
    /// `appid`/`appidacr` for `azp`/`azpacr`, has ver "2.0" and the v2 issuer. The shape follows
    /// [`TokenFacts::token_version`]; `aud` is [`crate::resources::audience`] of that version.
    pub fn claims(&self) -> Value {
        let sp = self.principal;
        let tid = &sp.tenant_id;
        let version = self.token_version();
        let iss = match version {
            Version::V1 => issuer_v1(tid),
            Version::V2 => issuer_v2(tid),
        };
        let mut c = json!({
            "aud": crate::resources::audience(self.audience, version),
            "iss": iss,
            "iat": self.not_before(),
            "nbf": self.not_before(),
            "exp": self.expires_on(),
            "aio": aio(),
            "idp": iss,
            "idtyp": "app",
            "oid": sp.object_id,
            "rh": rh(tid, crate::resources::app_id(self.audience)),
            "sub": sp.object_id,
            "tid": tid,
            "uti": uti(),
            "xms_act_fct": MI_ACT_FCT,
            "xms_ftd": xms_ftd(),
            "xms_idrel": xms_idrel(),
            "xms_mirid": mirid(&sp.msi_resource_id),
            "xms_rd": xms_rd(),
            "xms_sub_fct": MI_SUB_FCT,
        });
        let Some(obj) = c.as_object_mut() else {
            return c;
        };
        match version {
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
        if self.tenant_created > 0 {
            // Never after `iat`, which is back-dated: a tenant created seconds ago still predates
            // the tokens it issues.
            let tcdt = self.tenant_created.min(self.not_before());
            obj.insert("xms_tcdt".into(), tcdt.into());
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
            tenant_created: 0,
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
            tenant_created: 0,
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
            tenant_created: 0,
        };
        assert_eq!(f.expires_on(), i64::MAX);
        assert_eq!(f.claims()["exp"].as_i64(), Some(i64::MAX));
        let f = TokenFacts { now: i64::MIN, ..f };
        assert_eq!(f.not_before(), i64::MIN);
    }

    #[test]
    fn opaque_claims_have_entras_shapes() {
        let a = aio();
        assert_eq!(a.len(), 140);
        assert!(a.starts_with("AWQAm/8aAAAA"));
        assert!(base64::engine::general_purpose::STANDARD.decode(&a).is_ok());
        let tid = "f2a33211-e46a-4c92-b84d-aff06c2cd13f";
        let arm = "797f4846-ba00-4fd7-ba43-dac1f8f63013";
        let h = rh(tid, Some(arm));
        let body = h
            .strip_prefix("1.")
            .and_then(|b| b.strip_suffix('.'))
            .unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .unwrap();
        assert_eq!(bytes.len(), 40);
        assert_eq!(
            uuid::Uuid::from_slice_le(&bytes[3..19])
                .unwrap()
                .to_string(),
            tid
        );
        assert_eq!(
            uuid::Uuid::from_slice_le(&bytes[19..35])
                .unwrap()
                .to_string(),
            arm
        );
        assert_eq!(uti().len(), 22);
        assert!(xms_rd().starts_with("0.42Lj"));
        let ftd = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(xms_ftd())
            .unwrap();
        assert!(ftd.ends_with(b"\x01useast-dsms"));
        let idrel = xms_idrel();
        let parts: Vec<&str> = idrel.split(' ').collect();
        assert_eq!(parts[0], "7");
        assert!(parts[1].parse::<u8>().is_ok());
    }

    #[test]
    fn mirid_lower_cases_only_the_resource_groups_segment() {
        assert_eq!(
            mirid("/subscriptions/S/resourceGroups/Default-RG/providers/Microsoft.Compute/virtualMachines/it-VM"),
            "/subscriptions/S/resourcegroups/Default-RG/providers/Microsoft.Compute/virtualMachines/it-VM"
        );
        assert_eq!(
            mirid("/SUBSCRIPTIONS/s/RESOURCEGROUPS/r"),
            "/SUBSCRIPTIONS/s/resourcegroups/r"
        );
        assert_eq!(mirid("not/an/id"), "not/an/id");
        assert_eq!(
            mirid("/subscriptions/s/resourceGroups/resourceGroups/x"),
            "/subscriptions/s/resourcegroups/resourceGroups/x",
            "a group named like the segment keeps its casing"
        );
    }
}
