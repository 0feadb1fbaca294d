//! The `misim.arm.v1.Arm` gRPC adapter: converts pb requests to domain calls on [`Arm`] and domain
//! records back to pb messages. The only inbound place that touches generated types.

use std::collections::BTreeMap;
use std::sync::Arc;

use misim_proto::arm as pb;
use misim_proto::arm::arm_server::{Arm as ArmApi, ArmServer};
use tonic::{Request, Response, Status};

use crate::model::{ResourceGroup, RoleAssignment, Subscription, Uami, Vm, VmIdentityView};
use crate::rbac::{find_role, RoleDefinition, BUILT_IN_ROLES};
use crate::service::Arm;
use crate::vms::CreateVm;

/// gRPC service over the shared ARM core.
pub struct ArmGrpc {
    arm: Arc<Arm>,
}

impl ArmGrpc {
    /// The tonic server for `arm`.
    pub fn server(arm: Arc<Arm>) -> ArmServer<ArmGrpc> {
        ArmServer::new(ArmGrpc { arm })
    }
}

type R<T> = Result<Response<T>, Status>;

fn tags(m: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

fn sub_pb(s: Subscription) -> pb::Subscription {
    pb::Subscription {
        id: s.id().to_string(),
        subscription_id: s.subscription_id,
        tenant_id: s.tenant_id,
        display_name: s.display_name,
        state: s.state,
        is_default: s.is_default,
    }
}

fn group_pb(g: ResourceGroup) -> pb::ResourceGroup {
    pb::ResourceGroup {
        id: g.id.to_string(),
        name: g.id.name().to_string(),
        location: g.location,
        tags: g.tags.into_iter().collect(),
        provisioning_state: "Succeeded".into(),
    }
}

fn identity_pb(v: VmIdentityView) -> pb::VmIdentity {
    pb::VmIdentity {
        r#type: v.kind,
        principal_id: v.principal_id,
        tenant_id: v.tenant_id,
        user_assigned_identities: v
            .user_assigned
            .into_iter()
            .map(|e| {
                let value = pb::UserAssignedIdentityValue {
                    principal_id: e.principal_id,
                    client_id: e.client_id,
                };
                (e.id.to_string(), value)
            })
            .collect(),
    }
}

fn vm_pb(vm: Vm) -> pb::VirtualMachine {
    pb::VirtualMachine {
        id: vm.id.to_string(),
        name: vm.id.name().to_string(),
        resource_group: vm.id.resource_group_name().unwrap_or_default().to_string(),
        subscription_id: vm.id.subscription_id().to_string(),
        location: vm.location.clone(),
        vm_id: vm.vm_id.clone(),
        vm_size: vm.vm_size.clone(),
        os_type: vm.os_type.clone(),
        tags: vm.tags.clone().into_iter().collect(),
        identity: Some(identity_pb(vm.identity_view())),
        host: vm.host.clone(),
        imds_endpoint: vm.imds_endpoint.clone(),
        provisioning_state: vm.provisioning_state().into(),
        private_ip_address: vm.private_ip.clone(),
        extension_endpoint: String::new(),
        extension_credential_path: String::new(),
    }
}

fn uami_pb(u: Uami) -> pb::UserAssignedIdentity {
    let (principal_id, client_id) = u
        .identity
        .map(|i| (i.principal_id, i.client_id))
        .unwrap_or_default();
    pb::UserAssignedIdentity {
        id: u.id.to_string(),
        name: u.id.name().to_string(),
        r#type: "Microsoft.ManagedIdentity/userAssignedIdentities".into(),
        location: u.location,
        resource_group: u.id.resource_group_name().unwrap_or_default().to_string(),
        tags: u.tags.into_iter().collect(),
        tenant_id: u.tenant_id,
        principal_id,
        client_id,
    }
}

fn role_def_pb(r: &RoleDefinition, subscription_id: &str) -> pb::RoleDefinition {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    pb::RoleDefinition {
        id: r.id(subscription_id),
        name: r.guid.into(),
        role_name: r.role_name.into(),
        description: r.description.into(),
        actions: strings(r.actions),
        not_actions: strings(r.not_actions),
        data_actions: strings(r.data_actions),
    }
}

fn assignment_pb(ra: RoleAssignment) -> pb::RoleAssignment {
    let role = find_role(&ra.role_definition_guid);
    pb::RoleAssignment {
        role_definition_id: role
            .map(|r| r.id(ra.scope.subscription_id()))
            .unwrap_or_default(),
        role_definition_name: role.map(|r| r.role_name.to_string()).unwrap_or_default(),
        id: ra.id,
        name: ra.name,
        scope: ra.scope.to_string(),
        principal_id: ra.principal_id,
        principal_type: ra.principal_type,
    }
}

#[tonic::async_trait]
impl ArmApi for ArmGrpc {
    async fn get_account(&self, r: Request<pb::GetAccountRequest>) -> R<pb::Subscription> {
        Ok(Response::new(sub_pb(
            self.arm.subscription(&r.into_inner().subscription_id)?,
        )))
    }

    async fn list_subscriptions(
        &self,
        _: Request<pb::ListSubscriptionsRequest>,
    ) -> R<pb::ListSubscriptionsResponse> {
        let subscriptions = self
            .arm
            .list_subscriptions()?
            .into_iter()
            .map(sub_pb)
            .collect();
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions,
        }))
    }

    async fn create_resource_group(
        &self,
        r: Request<pb::CreateResourceGroupRequest>,
    ) -> R<pb::ResourceGroup> {
        let r = r.into_inner();
        let g = self
            .arm
            .create_group(&r.subscription_id, &r.name, &r.location, tags(r.tags))
            .await?;
        Ok(Response::new(group_pb(g)))
    }

    async fn get_resource_group(
        &self,
        r: Request<pb::GetResourceGroupRequest>,
    ) -> R<pb::ResourceGroup> {
        let r = r.into_inner();
        Ok(Response::new(group_pb(
            self.arm.group(&r.subscription_id, &r.name)?,
        )))
    }

    async fn list_resource_groups(
        &self,
        r: Request<pb::ListResourceGroupsRequest>,
    ) -> R<pb::ListResourceGroupsResponse> {
        let resource_groups = self
            .arm
            .list_groups(&r.into_inner().subscription_id)?
            .into_iter()
            .map(group_pb)
            .collect();
        Ok(Response::new(pb::ListResourceGroupsResponse {
            resource_groups,
        }))
    }

    async fn delete_resource_group(
        &self,
        r: Request<pb::DeleteResourceGroupRequest>,
    ) -> R<pb::DeleteResourceGroupResponse> {
        let r = r.into_inner();
        self.arm.delete_group(&r.subscription_id, &r.name).await?;
        Ok(Response::new(pb::DeleteResourceGroupResponse {}))
    }

    async fn create_vm(&self, r: Request<pb::CreateVmRequest>) -> R<pb::VirtualMachine> {
        let r = r.into_inner();
        let req = CreateVm {
            subscription_id: r.subscription_id,
            resource_group: r.resource_group,
            name: r.name,
            location: r.location,
            vm_size: r.vm_size,
            os_type: r.os_type,
            host: r.host,
            tags: tags(r.tags),
        };
        Ok(Response::new(vm_pb(self.arm.create_vm(req).await?)))
    }

    async fn get_vm(&self, r: Request<pb::GetVmRequest>) -> R<pb::VirtualMachine> {
        let r = r.into_inner();
        Ok(Response::new(vm_pb(
            self.arm
                .get_vm(&r.subscription_id, &r.resource_group, &r.name)
                .await?,
        )))
    }

    async fn list_vms(&self, r: Request<pb::ListVmsRequest>) -> R<pb::ListVmsResponse> {
        let r = r.into_inner();
        let vms = self
            .arm
            .list_vms(&r.subscription_id, &r.resource_group)?
            .into_iter()
            .map(vm_pb)
            .collect();
        Ok(Response::new(pb::ListVmsResponse { vms }))
    }

    async fn delete_vm(&self, r: Request<pb::DeleteVmRequest>) -> R<pb::DeleteVmResponse> {
        let r = r.into_inner();
        self.arm
            .delete_vm(&r.subscription_id, &r.resource_group, &r.name)
            .await?;
        Ok(Response::new(pb::DeleteVmResponse {}))
    }

    async fn assign_vm_identity(
        &self,
        r: Request<pb::AssignVmIdentityRequest>,
    ) -> R<pb::VmIdentity> {
        let r = r.into_inner();
        let v = self
            .arm
            .assign_vm_identity(
                &r.subscription_id,
                &r.resource_group,
                &r.name,
                r.system_assigned,
                &r.user_assigned_identities,
            )
            .await?;
        Ok(Response::new(identity_pb(v)))
    }

    async fn remove_vm_identity(
        &self,
        r: Request<pb::RemoveVmIdentityRequest>,
    ) -> R<pb::VmIdentity> {
        let r = r.into_inner();
        let v = self
            .arm
            .remove_vm_identity(
                &r.subscription_id,
                &r.resource_group,
                &r.name,
                r.system_assigned,
                &r.user_assigned_identities,
            )
            .await?;
        Ok(Response::new(identity_pb(v)))
    }

    async fn get_vm_identity(&self, r: Request<pb::GetVmIdentityRequest>) -> R<pb::VmIdentity> {
        let r = r.into_inner();
        Ok(Response::new(identity_pb(self.arm.get_vm_identity(
            &r.subscription_id,
            &r.resource_group,
            &r.name,
        )?)))
    }

    async fn create_user_assigned_identity(
        &self,
        r: Request<pb::CreateUserAssignedIdentityRequest>,
    ) -> R<pb::UserAssignedIdentity> {
        let r = r.into_inner();
        let u = self
            .arm
            .create_user_assigned_identity(
                &r.subscription_id,
                &r.resource_group,
                &r.name,
                &r.location,
                tags(r.tags),
            )
            .await?;
        Ok(Response::new(uami_pb(u)))
    }

    async fn get_user_assigned_identity(
        &self,
        r: Request<pb::GetUserAssignedIdentityRequest>,
    ) -> R<pb::UserAssignedIdentity> {
        let r = r.into_inner();
        Ok(Response::new(uami_pb(
            self.arm
                .get_user_assigned_identity(&r.subscription_id, &r.resource_group, &r.name)?,
        )))
    }

    async fn list_user_assigned_identities(
        &self,
        r: Request<pb::ListUserAssignedIdentitiesRequest>,
    ) -> R<pb::ListUserAssignedIdentitiesResponse> {
        let r = r.into_inner();
        let identities = self
            .arm
            .list_user_assigned_identities(&r.subscription_id, &r.resource_group)?
            .into_iter()
            .map(uami_pb)
            .collect();
        Ok(Response::new(pb::ListUserAssignedIdentitiesResponse {
            identities,
        }))
    }

    async fn delete_user_assigned_identity(
        &self,
        r: Request<pb::DeleteUserAssignedIdentityRequest>,
    ) -> R<pb::DeleteUserAssignedIdentityResponse> {
        let r = r.into_inner();
        self.arm
            .delete_user_assigned_identity(&r.subscription_id, &r.resource_group, &r.name)
            .await?;
        Ok(Response::new(pb::DeleteUserAssignedIdentityResponse {}))
    }

    async fn create_role_assignment(
        &self,
        r: Request<pb::CreateRoleAssignmentRequest>,
    ) -> R<pb::RoleAssignment> {
        let r = r.into_inner();
        let ra = self
            .arm
            .create_role_assignment(&r.scope, &r.role, &r.principal_id, &r.principal_type)
            .await?;
        Ok(Response::new(assignment_pb(ra)))
    }

    async fn list_role_assignments(
        &self,
        r: Request<pb::ListRoleAssignmentsRequest>,
    ) -> R<pb::ListRoleAssignmentsResponse> {
        let r = r.into_inner();
        let role_assignments = self
            .arm
            .list_role_assignments(&r.scope, &r.principal_id)?
            .into_iter()
            .map(assignment_pb)
            .collect();
        Ok(Response::new(pb::ListRoleAssignmentsResponse {
            role_assignments,
        }))
    }

    async fn delete_role_assignment(
        &self,
        r: Request<pb::DeleteRoleAssignmentRequest>,
    ) -> R<pb::DeleteRoleAssignmentResponse> {
        self.arm.delete_role_assignment(&r.into_inner().id).await?;
        Ok(Response::new(pb::DeleteRoleAssignmentResponse {}))
    }

    async fn list_role_definitions(
        &self,
        r: Request<pb::ListRoleDefinitionsRequest>,
    ) -> R<pb::ListRoleDefinitionsResponse> {
        let sub = self.arm.subscription(&r.into_inner().subscription_id)?;
        let role_definitions = BUILT_IN_ROLES
            .iter()
            .map(|d| role_def_pb(d, &sub.subscription_id))
            .collect();
        Ok(Response::new(pb::ListRoleDefinitionsResponse {
            role_definitions,
        }))
    }
}
