//! Builders the unit tests of several modules share (compiled for tests only).

use misim_core::ResourceId;

use crate::model::{
    Credential, HeldIdentity, HostCredential, IdentityKind, IdentityRef, SharedCredential,
};

/// A held identity named `name` of `kind` at `msi_res_id`: client ID `client-{name}`, principal
/// ID `object-{name}`, tenant `t`, and an empty credential (no key, expired).
pub(crate) fn held(msi_res_id: ResourceId, kind: IdentityKind, name: &str) -> HeldIdentity {
    HeldIdentity {
        identity: IdentityRef {
            msi_res_id,
            kind,
            client_id: format!("client-{name}"),
            principal_id: format!("object-{name}"),
            tenant_id: "t".into(),
        },
        credential: SharedCredential::new(HostCredential::new(Credential {
            certificate_der: vec![],
            private_key_pkcs8_der: vec![],
            not_after: 0,
        })),
    }
}
