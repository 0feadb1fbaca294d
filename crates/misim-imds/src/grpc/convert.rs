//! Conversions between the `misim.imds.v1` messages and the host's domain types; malformed input
//! becomes [`AgentError::InvalidArgument`].

use misim_core::ResourceId;
use misim_proto::imds as pb;

use crate::error::AgentError;

type Result<T> = std::result::Result<T, AgentError>;
use crate::model::{IdentityKind, IdentityRef, PlacedVm, ServedIdentity, VmInfo};

/// Parses a resource ID field, naming the field in the error.
pub fn resource_id(field: &str, value: &str) -> Result<ResourceId> {
    ResourceId::parse(value).map_err(|e| AgentError::InvalidArgument(format!("{field}: {e}")))
}

/// A `$to` (either VM record) from `$from` (the other), with `resource_id` given and every other
/// field moved over as it is: both types carry the same fields.
macro_rules! vm_info {
    ($($to:ident)::+, $from:ident, $resource_id:expr) => {
        $($to)::+ {
            resource_id: $resource_id,
            vm_id: $from.vm_id,
            name: $from.name,
            subscription_id: $from.subscription_id,
            resource_group: $from.resource_group,
            location: $from.location,
            vm_size: $from.vm_size,
            os_type: $from.os_type,
            vm_scale_set_name: $from.vm_scale_set_name,
            tags: $from.tags.into_iter().collect(),
            private_ip_address: $from.private_ip_address,
            mac_address: $from.mac_address,
        }
    };
}

impl TryFrom<pb::VmInfo> for VmInfo {
    type Error = AgentError;

    fn try_from(v: pb::VmInfo) -> Result<Self> {
        let resource_id = resource_id("vm.resource_id", &v.resource_id)?;
        Ok(vm_info!(VmInfo, v, resource_id))
    }
}

impl From<VmInfo> for pb::VmInfo {
    fn from(v: VmInfo) -> Self {
        vm_info!(pb::VmInfo, v, v.resource_id.to_string())
    }
}

impl TryFrom<pb::IdentityRef> for IdentityRef {
    type Error = AgentError;

    fn try_from(i: pb::IdentityRef) -> Result<Self> {
        let kind = match pb::IdentityKind::try_from(i.kind) {
            Ok(pb::IdentityKind::SystemAssigned) => IdentityKind::SystemAssigned,
            Ok(pb::IdentityKind::UserAssigned) => IdentityKind::UserAssigned,
            _ => {
                return Err(AgentError::InvalidArgument(format!(
                    "identity {}: kind must be set",
                    i.msi_res_id
                )))
            }
        };
        if i.client_id.is_empty() || i.tenant_id.is_empty() {
            return Err(AgentError::InvalidArgument(format!(
                "identity {}: client_id and tenant_id are required",
                i.msi_res_id
            )));
        }
        Ok(IdentityRef {
            msi_res_id: resource_id("identity.msi_res_id", &i.msi_res_id)?,
            kind,
            client_id: i.client_id,
            principal_id: i.principal_id,
            tenant_id: i.tenant_id,
        })
    }
}

impl From<IdentityRef> for pb::IdentityRef {
    fn from(i: IdentityRef) -> Self {
        let kind = match i.kind {
            IdentityKind::SystemAssigned => pb::IdentityKind::SystemAssigned,
            IdentityKind::UserAssigned => pb::IdentityKind::UserAssigned,
        };
        pb::IdentityRef {
            msi_res_id: i.msi_res_id.to_string(),
            kind: kind as i32,
            client_id: i.client_id,
            principal_id: i.principal_id,
            tenant_id: i.tenant_id,
        }
    }
}

impl From<ServedIdentity> for pb::ServedIdentity {
    fn from(s: ServedIdentity) -> Self {
        pb::ServedIdentity {
            identity: Some(s.identity.into()),
            thumbprint_sha1_hex: s.thumbprint_sha1_hex,
            cert_not_after: s.cert_not_after,
        }
    }
}

impl From<PlacedVm> for pb::PlacedVm {
    fn from(p: PlacedVm) -> Self {
        let ext = p.extension.as_ref();
        pb::PlacedVm {
            vm: Some(p.vm.into()),
            host: p.host,
            imds_endpoint: p.imds_endpoint,
            identities: p.identities.into_iter().map(Into::into).collect(),
            extension_endpoint: ext.map(|e| e.endpoint.clone()).unwrap_or_default(),
            extension_credential_path: ext.map(|e| e.credential_path.clone()).unwrap_or_default(),
            extension_port: ext.map(|e| u32::from(e.port)).unwrap_or_default(),
            identity_endpoint: p.identity_endpoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_without_kind_or_client_id_is_rejected() {
        let base = pb::IdentityRef {
            msi_res_id:
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v"
                    .into(),
            kind: pb::IdentityKind::SystemAssigned as i32,
            client_id: "c".into(),
            principal_id: "p".into(),
            tenant_id: "t".into(),
        };
        assert!(IdentityRef::try_from(base.clone()).is_ok());
        let no_kind = pb::IdentityRef {
            kind: 0,
            ..base.clone()
        };
        assert!(matches!(
            IdentityRef::try_from(no_kind),
            Err(AgentError::InvalidArgument(_))
        ));
        let no_client = pb::IdentityRef {
            client_id: String::new(),
            ..base.clone()
        };
        assert!(matches!(
            IdentityRef::try_from(no_client),
            Err(AgentError::InvalidArgument(_))
        ));
        let bad_id = pb::IdentityRef {
            msi_res_id: "nope".into(),
            ..base
        };
        assert!(matches!(
            IdentityRef::try_from(bad_id),
            Err(AgentError::InvalidArgument(_))
        ));
    }
}
