//! The `misim.arm.v1.Arm` gRPC adapter: converts pb requests to domain calls on [`Arm`] and domain
//! records back to pb messages. The only inbound place that touches generated types.

use std::sync::Arc;

use misim_proto::arm as pb;
use misim_proto::arm::arm_server::{Arm as ArmApi, ArmServer};
use tonic::{Request, Response, Status};

use crate::authorization::roles::BUILT_IN_ROLES;
use crate::identity::IdentityOwner;
use crate::resources::extensions::SetExtension;
use crate::resources::vms::CreateVm;
use crate::resources::vmss::CreateVmss;
use crate::service::Arm;
use identity::Op;

/// The [`crate::resources::NewResource`] a create request names: its `subscription_id`, `resource_group`, `name`,
/// `location` and `tags` fields, moved out of the request `$r`.
macro_rules! new_resource {
    ($r:ident) => {
        $crate::resources::NewResource {
            subscription_id: $r.subscription_id,
            resource_group: $r.resource_group,
            name: $r.name,
            location: $r.location,
            tags: $crate::grpc::convert::tags($r.tags),
        }
    };
}

mod convert;
mod identity;
mod webapps;
mod workload;
use convert::*;

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

/// Checks `authorization: Bearer <token>` on every call of the user-facing API (the `api_token`
/// option for shared machines); refusals are `UNAUTHENTICATED` with what to set.
#[derive(Clone)]
pub struct BearerCheck {
    expected: Arc<Vec<u8>>,
}

impl BearerCheck {
    /// Accepts calls carrying `token`.
    pub fn new(token: String) -> Self {
        BearerCheck {
            expected: Arc::new(format!("Bearer {token}").into_bytes()),
        }
    }
}

impl tonic::service::Interceptor for BearerCheck {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // Constant-time comparison: the token is a shared secret.
        let same = given.len() == self.expected.len()
            && given
                .iter()
                .zip(self.expected.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "ARM's gRPC API requires `authorization: Bearer <token>`: set MISIM_ARM_TOKEN to the \
                 token misim up was started with (--arm-api-token / MISIM_ARM_API_TOKEN)",
            ))
        }
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
        let subscriptions = all(self.arm.list_subscriptions()?, sub_pb);
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
        let resource_groups = all(
            self.arm.list_groups(&r.into_inner().subscription_id)?,
            group_pb,
        );
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
            resource: new_resource!(r),
            vm_size: r.vm_size,
            os_type: r.os_type,
            host: r.host,
            private_ip: r.private_ip_address,
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
        let vms = all(
            self.arm.list_vms(&r.subscription_id, &r.resource_group)?,
            vm_pb,
        );
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
        self.identity_change(IdentityOwner::VirtualMachine, Op::Assign, r.into_inner())
            .await
    }

    async fn remove_vm_identity(
        &self,
        r: Request<pb::RemoveVmIdentityRequest>,
    ) -> R<pb::VmIdentity> {
        self.identity_change(IdentityOwner::VirtualMachine, Op::Remove, r.into_inner())
            .await
    }

    async fn get_vm_identity(&self, r: Request<pb::GetVmIdentityRequest>) -> R<pb::VmIdentity> {
        self.identity_get(IdentityOwner::VirtualMachine, r.into_inner())
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
        let identities = all(
            self.arm
                .list_user_assigned_identities(&r.subscription_id, &r.resource_group)?,
            uami_pb,
        );
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
        let role_assignments = all(
            self.arm.list_role_assignments(&r.scope, &r.principal_id)?,
            assignment_pb,
        );
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

    async fn create_vmss(
        &self,
        r: Request<pb::CreateVmssRequest>,
    ) -> R<pb::VirtualMachineScaleSet> {
        let r = r.into_inner();
        let req = CreateVmss {
            resource: new_resource!(r),
            vm_size: r.vm_size,
            os_type: r.os_type,
            capacity: r.capacity,
        };
        Ok(Response::new(vmss_pb(self.arm.create_vmss(req).await?)))
    }

    async fn get_vmss(&self, r: Request<pb::GetVmssRequest>) -> R<pb::VirtualMachineScaleSet> {
        let r = r.into_inner();
        Ok(Response::new(vmss_pb(self.arm.get_vmss(
            &r.subscription_id,
            &r.resource_group,
            &r.name,
        )?)))
    }

    async fn list_vmss(&self, r: Request<pb::ListVmssRequest>) -> R<pb::ListVmssResponse> {
        let r = r.into_inner();
        let scale_sets = all(
            self.arm.list_vmss(&r.subscription_id, &r.resource_group)?,
            vmss_pb,
        );
        Ok(Response::new(pb::ListVmssResponse { scale_sets }))
    }

    async fn delete_vmss(&self, r: Request<pb::DeleteVmssRequest>) -> R<pb::DeleteVmssResponse> {
        let r = r.into_inner();
        self.arm
            .delete_vmss(&r.subscription_id, &r.resource_group, &r.name)
            .await?;
        Ok(Response::new(pb::DeleteVmssResponse {}))
    }

    async fn scale_vmss(&self, r: Request<pb::ScaleVmssRequest>) -> R<pb::VirtualMachineScaleSet> {
        let r = r.into_inner();
        let ss = self
            .arm
            .scale_vmss(&r.subscription_id, &r.resource_group, &r.name, r.capacity)
            .await?;
        Ok(Response::new(vmss_pb(ss)))
    }

    async fn assign_vmss_identity(
        &self,
        r: Request<pb::AssignVmssIdentityRequest>,
    ) -> R<pb::VmIdentity> {
        self.identity_change(IdentityOwner::ScaleSet, Op::Assign, r.into_inner())
            .await
    }

    async fn remove_vmss_identity(
        &self,
        r: Request<pb::RemoveVmssIdentityRequest>,
    ) -> R<pb::VmIdentity> {
        self.identity_change(IdentityOwner::ScaleSet, Op::Remove, r.into_inner())
            .await
    }

    async fn list_vmss_instances(
        &self,
        r: Request<pb::ListVmssInstancesRequest>,
    ) -> R<pb::ListVmssInstancesResponse> {
        let r = r.into_inner();
        let (ss, list) = self
            .arm
            .list_vmss_instances(&r.subscription_id, &r.resource_group, &r.name)
            .await?;
        let instances = list.into_iter().map(|i| instance_pb(&ss, i)).collect();
        Ok(Response::new(pb::ListVmssInstancesResponse { instances }))
    }

    async fn set_vm_extension(&self, r: Request<pb::SetVmExtensionRequest>) -> R<pb::VmExtension> {
        let r = r.into_inner();
        let req = SetExtension {
            name: r.name,
            publisher: r.publisher,
            extension_type: r.r#type,
            type_handler_version: r.type_handler_version,
            settings_json: r.settings_json,
            force_update_tag: r.force_update_tag,
        };
        let (vm, ext) = self
            .arm
            .set_vm_extension(&r.subscription_id, &r.resource_group, &r.vm_name, req)
            .await?;
        Ok(Response::new(extension_pb(&vm, ext)))
    }

    async fn delete_vm_extension(
        &self,
        r: Request<pb::DeleteVmExtensionRequest>,
    ) -> R<pb::DeleteVmExtensionResponse> {
        let r = r.into_inner();
        self.arm
            .delete_vm_extension(&r.subscription_id, &r.resource_group, &r.vm_name, &r.name)
            .await?;
        Ok(Response::new(pb::DeleteVmExtensionResponse {}))
    }

    async fn list_vm_extensions(
        &self,
        r: Request<pb::ListVmExtensionsRequest>,
    ) -> R<pb::ListVmExtensionsResponse> {
        let r = r.into_inner();
        let vm = self
            .arm
            .get_vm(&r.subscription_id, &r.resource_group, &r.vm_name)
            .await?;
        let extensions = vm
            .extensions
            .values()
            .cloned()
            .map(|e| extension_pb(&vm, e))
            .collect();
        Ok(Response::new(pb::ListVmExtensionsResponse { extensions }))
    }

    async fn create_vault(&self, r: Request<pb::CreateVaultRequest>) -> R<pb::Vault> {
        let r = r.into_inner();
        let v = self
            .arm
            .create_vault(&r.subscription_id, &r.resource_group, &r.name, &r.location)
            .await?;
        Ok(Response::new(vault_pb(v, self.arm.public_rest_url())))
    }

    async fn set_secret(&self, r: Request<pb::SetSecretRequest>) -> R<pb::Secret> {
        let r = r.into_inner();
        let s = self
            .arm
            .set_secret(&r.vault_name, &r.name, &r.value)
            .await?;
        Ok(Response::new(secret_pb(s)))
    }

    // App Service web apps: in `webapps.rs`.
    async fn create_web_app(&self, r: Request<pb::CreateWebAppRequest>) -> R<pb::WebApp> {
        self.webapp_create(r).await
    }

    async fn get_web_app(&self, r: Request<pb::GetWebAppRequest>) -> R<pb::WebApp> {
        self.webapp_get(r).await
    }

    async fn list_web_apps(
        &self,
        r: Request<pb::ListWebAppsRequest>,
    ) -> R<pb::ListWebAppsResponse> {
        self.webapp_list(r).await
    }

    async fn delete_web_app(
        &self,
        r: Request<pb::DeleteWebAppRequest>,
    ) -> R<pb::DeleteWebAppResponse> {
        self.webapp_delete(r).await
    }

    async fn assign_web_app_identity(
        &self,
        r: Request<pb::AssignVmIdentityRequest>,
    ) -> R<pb::VmIdentity> {
        self.identity_change(IdentityOwner::WebApp, Op::Assign, r.into_inner())
            .await
    }

    async fn remove_web_app_identity(
        &self,
        r: Request<pb::RemoveVmIdentityRequest>,
    ) -> R<pb::VmIdentity> {
        self.identity_change(IdentityOwner::WebApp, Op::Remove, r.into_inner())
            .await
    }

    async fn get_web_app_identity(
        &self,
        r: Request<pb::GetVmIdentityRequest>,
    ) -> R<pb::VmIdentity> {
        self.identity_get(IdentityOwner::WebApp, r.into_inner())
    }

    // AKS workload identity: in `workload.rs`.
    async fn create_federated_identity_credential(
        &self,
        r: Request<pb::CreateFederatedIdentityCredentialRequest>,
    ) -> R<pb::FederatedIdentityCredential> {
        self.wl_create_fic(r).await
    }

    async fn list_federated_identity_credentials(
        &self,
        r: Request<pb::ListFederatedIdentityCredentialsRequest>,
    ) -> R<pb::ListFederatedIdentityCredentialsResponse> {
        self.wl_list_fics(r).await
    }

    async fn delete_federated_identity_credential(
        &self,
        r: Request<pb::DeleteFederatedIdentityCredentialRequest>,
    ) -> R<pb::DeleteFederatedIdentityCredentialResponse> {
        self.wl_delete_fic(r).await
    }

    async fn create_managed_cluster(
        &self,
        r: Request<pb::CreateManagedClusterRequest>,
    ) -> R<pb::ManagedCluster> {
        self.wl_create_cluster(r).await
    }

    async fn get_managed_cluster(
        &self,
        r: Request<pb::GetManagedClusterRequest>,
    ) -> R<pb::ManagedCluster> {
        self.wl_get_cluster(r).await
    }

    async fn delete_managed_cluster(
        &self,
        r: Request<pb::DeleteManagedClusterRequest>,
    ) -> R<pb::DeleteManagedClusterResponse> {
        self.wl_delete_cluster(r).await
    }

    async fn create_service_account_token(
        &self,
        r: Request<pb::CreateServiceAccountTokenRequest>,
    ) -> R<pb::ServiceAccountToken> {
        self.wl_sa_token(r).await
    }
}
