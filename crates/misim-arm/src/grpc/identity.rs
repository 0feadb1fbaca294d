//! The identity RPCs of the ARM gRPC adapter (`az vm|vmss|webapp identity assign|remove|show`),
//! written once over [`IdentityOwner`]: the assign and remove requests of every owner carry the
//! same fields.

use misim_proto::arm as pb;
use tonic::Response;

use super::convert::identity_pb;
use super::{ArmGrpc, R};
use crate::identity::{IdentityOwner, IdentityTarget};

/// What an identity request asks.
#[derive(Clone, Copy, Debug)]
pub(super) enum Op {
    /// Add the named identities, keeping the others.
    Assign,
    /// Drop the named identities, keeping the others.
    Remove,
}

/// The fields every assign and remove request has.
pub(super) trait ChangeRequest {
    /// `(subscription id, resource group, name, system-assigned, user-assigned ids)`.
    fn parts(&self) -> (&str, &str, &str, bool, &[String]);
}

macro_rules! change_request {
    ($($t:ty),*) => {$(
        impl ChangeRequest for $t {
            fn parts(&self) -> (&str, &str, &str, bool, &[String]) {
                (
                    &self.subscription_id,
                    &self.resource_group,
                    &self.name,
                    self.system_assigned,
                    &self.user_assigned_identities,
                )
            }
        }
    )*};
}

change_request!(
    pb::AssignVmIdentityRequest,
    pb::RemoveVmIdentityRequest,
    pb::AssignVmssIdentityRequest,
    pb::RemoveVmssIdentityRequest
);

impl ArmGrpc {
    /// Assigns or removes identities of `owner`'s resource named in `r`; answers its identity block.
    pub(super) async fn identity_change(
        &self,
        owner: IdentityOwner,
        op: Op,
        r: impl ChangeRequest,
    ) -> R<pb::VmIdentity> {
        let (s, g, n, system, user) = r.parts();
        let target = IdentityTarget::new(owner, s, g, n);
        let view = match op {
            Op::Assign => self.arm.assign_identity(target, system, user).await?,
            Op::Remove => self.arm.remove_identity(target, system, user).await?,
        };
        Ok(Response::new(identity_pb(&view)))
    }

    /// The identity block of `owner`'s resource named in `r`.
    pub(super) fn identity_get(
        &self,
        owner: IdentityOwner,
        r: pb::GetVmIdentityRequest,
    ) -> R<pb::VmIdentity> {
        let (s, g, n) = (&r.subscription_id, &r.resource_group, &r.name);
        let v = self.arm.get_identity(IdentityTarget::new(owner, s, g, n))?;
        Ok(Response::new(identity_pb(&v)))
    }
}
