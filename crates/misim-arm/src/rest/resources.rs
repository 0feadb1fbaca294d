//! ARM's resource operations on the REST surface: GET/PUT/PATCH/DELETE of resource groups, VMs,
//! scale sets, user-assigned identities, key vaults and role assignments, each authorized with the
//! caller's RBAC actions first (403 `AuthorizationFailed`; 403 `LinkedAuthorizationFailed` when a
//! user-assigned identity is attached without `…/assign/action` on it). Long-running operations
//! complete synchronously: PUT answers 200 (updated) or 201 (created) with the body, DELETE 200
//! (deleted) or 204 (absent). VMs and scale sets are in `resources/compute.rs`.

use axum::http::{Method, StatusCode};
use misim_core::ResourceId;
use serde_json::Value;

use super::auth::Caller;
use super::path::{Kind, Target};
use super::{authorize, body, json, listing, Fail};
use crate::error::{ArmError, Result};
use crate::model::{Subscription, Vm, Vmss};
use crate::service::Arm;
use crate::webapps::WebApp;

mod compute;
mod web;
use compute::resource_with_identity;
pub use web::site_json;

/// The permission needed to attach a user-assigned identity
/// (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/managed-identities-faq>).
pub const ASSIGN_ACTION: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";

/// One authenticated REST request.
pub struct Call<'a> {
    /// The ARM core.
    pub arm: &'a Arm,
    /// Who called.
    pub caller: &'a Caller,
    /// The subscription of the path.
    pub sub: &'a Subscription,
    /// HTTP method.
    pub method: &'a Method,
    /// `api-version`.
    pub api: &'a str,
    /// Parsed JSON body (`{}` when empty).
    pub body: &'a Value,
    /// Raw query string.
    pub query: &'a str,
    /// Request path.
    pub path: &'a str,
    /// The base URL the client used (for `nextLink`s and operation URLs).
    pub base: &'a str,
    /// Response headers to add.
    pub extra: &'a super::ExtraHeaders,
}

pub(super) type Reply = (StatusCode, Value);

pub(super) fn ok(v: Value) -> Result<Reply> {
    Ok((StatusCode::OK, v))
}

fn put_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

fn deleted(existed: bool) -> Result<Reply> {
    Ok(if existed {
        (StatusCode::OK, Value::Null)
    } else {
        (StatusCode::NO_CONTENT, Value::Null)
    })
}

impl Call<'_> {
    pub(super) fn allow(&self, action: &str, scope: &ResourceId) -> Result<()> {
        authorize(self.arm, self.caller, action, scope)
    }

    /// Adds the headers of an accepted asynchronous operation: `Location` (polled until it answers
    /// 200) and `Retry-After: 0`.
    pub(super) fn accepted(&self, path_and_query: &str) {
        let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        extra.push(("location", format!("{}{path_and_query}", self.base)));
        extra.push(("retry-after", "0".to_string()));
    }

    /// Adds the headers of an ARM asynchronous operation on `id` (`verb` is `put` or `delete`):
    /// `Azure-AsyncOperation` (the operation's status, `InProgress` until the resource reached the
    /// requested state) and `Location` (the same operation with `monitor=true`: 202 until done,
    /// then 200), as Compute answers PUT and DELETE.
    pub(super) fn async_operation(&self, verb: &str, id: &ResourceId, location: &str) {
        use base64::Engine;
        let op = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            serde_json::json!({ "v": verb, "id": id.to_string(), "t": self.arm.clock().now() })
                .to_string(),
        );
        let ns = id
            .resource_type()
            .and_then(|t| t.split('/').next().map(str::to_string))
            .unwrap_or_else(|| "Microsoft.Compute".into());
        let loc = if location.is_empty() {
            "westeurope"
        } else {
            location
        };
        let url = format!(
            "{}/subscriptions/{}/providers/{ns}/locations/{loc}/operations/{op}",
            self.base,
            id.subscription_id()
        );
        let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        extra.push((
            "azure-asyncoperation",
            format!("{url}?api-version={}", self.api),
        ));
        extra.push((
            "location",
            format!("{url}?monitor=true&api-version={}", self.api),
        ));
        extra.push(("retry-after", "0".to_string()));
    }

    pub(super) fn not_allowed(&self) -> ArmError {
        ArmError::MethodNotAllowed(self.method.to_string())
    }
}

/// Serves one request for `target`.
///
/// # Errors
/// Authorization, validation and lookup errors in ARM's shape.
pub async fn serve(c: &Call<'_>, target: Target) -> std::result::Result<Reply, Fail> {
    match target {
        Target::Locations(_) => Ok(listing::locations(c)?),
        Target::Groups(_) => listing::groups(c),
        Target::Resources(_, g) => listing::resources(c, g.as_deref()),
        Target::SubCollection(_, kind) => listing::sub_collection(c, kind),
        Target::Collection(_, g, Kind::Nic) => listing::nics(c, &g),
        Target::Resource(_, g, Kind::Nic, n) => Ok(listing::nic(c, &g, &n).await?),
        Target::InstanceView(_, g, n) => Ok(compute::instance_view(c, &g, &n).await?),
        Target::VmssInstance(_, g, n, i, view) => {
            Ok(compute::vmss_instance(c, &g, &n, &i, view).await?)
        }
        Target::OperationResult(_, _) => Ok(listing::operation_result(c)?),
        Target::Operation(_, _, op) => Ok(listing::operation_status(c, &op).await?),
        Target::RoleDefinitions(scope) => listing::role_definitions(c, &scope),
        Target::RoleDefinition(scope, name) => Ok(listing::role_definition(c, &scope, &name)?),
        Target::Permissions(scope) => Ok(listing::permissions(c, &scope)?),
        Target::DefaultIdentity(scope) => Ok(listing::default_identity(c, &scope).await?),
        Target::RoleAssignments(scope) => listing::role_assignments(c, &scope),
        other => Ok(serve_resource(c, other).await?),
    }
}

async fn serve_resource(c: &Call<'_>, target: Target) -> Result<Reply> {
    let s = c.sub.subscription_id.as_str();
    let bad_name = |e: misim_core::ids::IdError| ArmError::RouteNotFound(e.to_string());
    match target {
        Target::Subscription(_) => {
            if c.method != Method::GET {
                return Err(c.not_allowed());
            }
            c.allow("Microsoft.Resources/subscriptions/read", &c.sub.id())?;
            ok(json::subscription(c.sub))
        }
        Target::Group(_, g) => group(c, s, &g).await,
        Target::Collection(_, g, kind) => {
            if c.method != Method::GET {
                return Err(c.not_allowed());
            }
            let scope = ResourceId::parse(&format!("/subscriptions/{s}/resourceGroups/{g}"))
                .map_err(bad_name)?;
            c.allow(&format!("{}/read", kind.resource_type()), &scope)?;
            let arm = c.arm;
            let items: Vec<Value> = match kind {
                Kind::Vm => arm.list_vms(s, &g)?.iter().map(json::vm).collect(),
                Kind::Vmss => arm.list_vmss(s, &g)?.iter().map(json::vmss).collect(),
                Kind::Uami => arm
                    .list_user_assigned_identities(s, &g)?
                    .iter()
                    .map(|u| json::uami(u, c.api))
                    .collect(),
                Kind::Vault => arm
                    .store()
                    .vaults
                    .values()?
                    .iter()
                    .filter(|v| v.id.is_within(&scope))
                    .map(json::vault)
                    .collect(),
                Kind::Nic => Vec::new(),
                Kind::Site => arm.list_webapps(s, &g)?.iter().map(site_json).collect(),
            };
            ok(json::list(items))
        }
        Target::Resource(_, g, kind, n) => {
            let id = ResourceId::parse(&format!(
                "/subscriptions/{s}/resourceGroups/{g}/providers/{}/{n}",
                kind.resource_type()
            ))
            .map_err(bad_name)?;
            match kind {
                Kind::Vm => resource_with_identity::<Vm>(c, s, &g, &n, &id).await,
                Kind::Vmss => resource_with_identity::<Vmss>(c, s, &g, &n, &id).await,
                Kind::Uami => uami(c, s, &g, &n, &id).await,
                Kind::Vault => vault(c, s, &g, &n, &id).await,
                Kind::Nic => Err(ArmError::RouteNotFound(c.path.to_string())),
                Kind::Site => resource_with_identity::<WebApp>(c, s, &g, &n, &id).await,
            }
        }
        Target::VmssInstances(_, g, n) => {
            if c.method != Method::GET {
                return Err(c.not_allowed());
            }
            let id = c.arm.vmss_id(s, &g, &n)?;
            c.allow(
                "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
                &id,
            )?;
            let (ss, instances) = c.arm.list_vmss_instances(s, &g, &n).await?;
            ok(json::list(
                instances.iter().map(|i| json::instance(&ss, i)).collect(),
            ))
        }
        Target::RoleAssignment(scope, name) => role_assignment(c, &scope, &name).await,
        _ => Err(ArmError::RouteNotFound(c.path.to_string())),
    }
}

async fn group(c: &Call<'_>, s: &str, g: &str) -> Result<Reply> {
    let id = ResourceId::parse(&format!("/subscriptions/{s}/resourceGroups/{g}"))
        .map_err(|e| ArmError::RouteNotFound(e.to_string()))?;
    let action = |verb: &str| format!("Microsoft.Resources/subscriptions/resourceGroups/{verb}");
    match *c.method {
        Method::GET => {
            c.allow(&action("read"), &id)?;
            ok(json::resource_group(&c.arm.group(s, g)?))
        }
        Method::PUT => {
            c.allow(&action("write"), &id)?;
            let existed = c.arm.group(s, g).is_ok();
            let tags = body::tags(c.body).unwrap_or_default();
            let rg = c
                .arm
                .create_group(s, g, &body::location(c.body), tags)
                .await?;
            Ok((put_status(!existed), json::resource_group(&rg)))
        }
        Method::DELETE => {
            c.allow(&action("delete"), &id)?;
            c.arm.group(s, g)?;
            c.arm.delete_group(s, g).await?;
            // ARM deletes a group asynchronously: 202 with a Location to poll (Resource Groups -
            // Delete). misim finishes before answering, so the first poll reports completion.
            let op = uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .to_ascii_uppercase();
            c.accepted(&format!(
                "/subscriptions/{s}/operationresults/RESOURCEGROUPDELETIONJOB-{op}?api-version={}",
                c.api
            ));
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        _ => Err(c.not_allowed()),
    }
}

async fn uami(c: &Call<'_>, s: &str, g: &str, n: &str, id: &ResourceId) -> Result<Reply> {
    let action = |verb: &str| format!("Microsoft.ManagedIdentity/userAssignedIdentities/{verb}");
    let arm = c.arm;
    match *c.method {
        Method::GET => {
            c.allow(&action("read"), id)?;
            ok(json::uami(&arm.get_user_assigned_identity(s, g, n)?, c.api))
        }
        Method::PUT => {
            c.allow(&action("write"), id)?;
            let existed = arm.get_user_assigned_identity(s, g, n).is_ok();
            let tags = body::tags(c.body).unwrap_or_default();
            let u = arm
                .create_user_assigned_identity(s, g, n, &body::location(c.body), tags)
                .await?;
            Ok((put_status(!existed), json::uami(&u, c.api)))
        }
        Method::DELETE => {
            c.allow(&action("delete"), id)?;
            let existed = arm.get_user_assigned_identity(s, g, n).is_ok();
            arm.delete_user_assigned_identity(s, g, n).await?;
            deleted(existed)
        }
        _ => Err(c.not_allowed()),
    }
}

async fn vault(c: &Call<'_>, s: &str, g: &str, n: &str, id: &ResourceId) -> Result<Reply> {
    let action = |verb: &str| format!("Microsoft.KeyVault/vaults/{verb}");
    match *c.method {
        Method::GET => {
            c.allow(&action("read"), id)?;
            let v = c.arm.vault(n)?;
            if v.id != *id {
                return Err(ArmError::ResourceNotFound {
                    resource_type: "Microsoft.KeyVault/vaults".into(),
                    name: n.into(),
                    group: g.into(),
                });
            }
            ok(json::vault(&v))
        }
        Method::PUT => {
            c.allow(&action("write"), id)?;
            let existed = c.arm.vault(n).is_ok_and(|v| v.id == *id);
            let v = c.arm.create_vault(s, g, n, &body::location(c.body)).await?;
            Ok((put_status(!existed), json::vault(&v)))
        }
        _ => Err(c.not_allowed()),
    }
}

async fn role_assignment(c: &Call<'_>, scope: &str, name: &str) -> Result<Reply> {
    let scope_id = ResourceId::parse(scope).map_err(|e| ArmError::RouteNotFound(e.to_string()))?;
    let id = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
    let find = || -> Result<Option<crate::model::RoleAssignment>> {
        Ok(c.arm
            .store()
            .role_assignments
            .get(&id.to_ascii_lowercase())?)
    };
    let not_found = || ArmError::ResourceNotFound {
        resource_type: "Microsoft.Authorization/roleAssignments".into(),
        name: name.into(),
        group: scope_id.resource_group_name().unwrap_or_default().into(),
    };
    match *c.method {
        Method::GET => {
            c.allow("Microsoft.Authorization/roleAssignments/read", &scope_id)?;
            ok(json::role_assignment(&find()?.ok_or_else(not_found)?))
        }
        Method::PUT => {
            c.allow("Microsoft.Authorization/roleAssignments/write", &scope_id)?;
            let role = body::property(c.body, "roleDefinitionId");
            let principal = body::property(c.body, "principalId");
            if role.is_empty() || principal.is_empty() {
                return Err(ArmError::InvalidArgument(
                    "The request must contain properties.roleDefinitionId and properties.principalId.".into(),
                ));
            }
            let principal_type = body::property(c.body, "principalType");
            let (ra, created) = c
                .arm
                .put_role_assignment(scope, Some(name), role, principal, principal_type)
                .await?;
            Ok((put_status(created), json::role_assignment(&ra)))
        }
        Method::DELETE => {
            c.allow("Microsoft.Authorization/roleAssignments/delete", &scope_id)?;
            match c.arm.delete_role_assignment(&id).await? {
                Some(ra) => ok(json::role_assignment(&ra)),
                None => deleted(false),
            }
        }
        _ => Err(c.not_allowed()),
    }
}
