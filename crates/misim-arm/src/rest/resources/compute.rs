//! VMs and scale sets on the REST surface: GET, PUT/PATCH (create, capacity, and the `identity`
//! block with ARM's PUT/PATCH semantics, checking `…/assign/action` on every newly attached
//! user-assigned identity) and DELETE.

use std::collections::BTreeMap;

use axum::http::Method;
use misim_core::ResourceId;

use super::{body, deleted, json, ok, put_status, Call, Reply, ASSIGN_ACTION};
use crate::error::{ArmError, Result};
use crate::identity::{current_set, Holder, IdentityOwner};
use crate::identity_spec::{self, IdentityRequest, Mode};
use crate::model::{UserAssignedEntry, Vm, Vmss};
use crate::resources::NewResource;
use crate::service::Arm;
use crate::vms::CreateVm;
use crate::vmss::CreateVmss;

impl Call<'_> {
    /// The resource a PUT or PATCH writes to, from one read: `None` when a PUT creates it; a PATCH
    /// of a missing resource fails with the read's error (404).
    pub(super) fn existing_for_write<T>(&self, read: Result<T>) -> Result<Option<T>> {
        match read {
            Ok(r) => Ok(Some(r)),
            Err(e) if self.method == Method::PATCH => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// The `identity` block of a PUT/PATCH body and the mode it applies with, once the caller may
    /// link every user-assigned identity it adds ([`Call::allow_linked`]). `current`: the resource's
    /// user-assigned identities, `None` when the request creates it.
    pub(super) fn identity_for_write(
        &self,
        action: &str,
        scope: &ResourceId,
        current: Option<&BTreeMap<String, UserAssignedEntry>>,
    ) -> Result<(Option<IdentityRequest>, Mode)> {
        let identity = body::identity(self.body)?;
        let mode = if self.method == Method::PUT {
            Mode::Put
        } else {
            Mode::Patch
        };
        if let Some(req) = &identity {
            let none = BTreeMap::new();
            self.allow_linked(action, scope, current.unwrap_or(&none), req, mode)?;
        }
        Ok((identity, mode))
    }

    /// Checks `assign/action` on every identity the request newly attaches (LinkedAuthorizationFailed).
    pub(super) fn allow_linked(
        &self,
        action: &str,
        scope: &ResourceId,
        current: &BTreeMap<String, UserAssignedEntry>,
        req: &IdentityRequest,
        mode: Mode,
    ) -> Result<()> {
        let plan = identity_spec::plan(&current_set(current), req, mode)?;
        let denied: Vec<String> = plan
            .added
            .iter()
            .filter(|id| {
                !self
                    .arm
                    .authorize(&self.caller.object_id, ASSIGN_ACTION, id)
                    .unwrap_or(false)
            })
            .map(|id| id.to_string())
            .collect();
        if denied.is_empty() {
            return Ok(());
        }
        tracing::info!(principal = %self.caller.object_id, scope = %scope, linked = ?denied, "linked authorization failed");
        Err(ArmError::LinkedAuthorizationFailed {
            principal: self.caller.object_id.clone(),
            action: action.to_string(),
            scope: scope.to_string(),
            linked_action: ASSIGN_ACTION.to_string(),
            linked_scopes: denied.join(","),
        })
    }

    /// PUT/PATCH of a resource with an `identity` block (VM, scale set, web app): checks `write`,
    /// reads it once, checks the linked identities, creates or changes it ([`Writable::write`]),
    /// then applies the identity block with ARM's PUT/PATCH semantics. Returns whether the request
    /// created it and the resource as stored afterwards.
    ///
    /// # Errors
    /// Authorization, the body's errors, and those of the ARM calls.
    pub(super) async fn write_with_identity<R: Writable>(
        &self,
        write: &str,
        (s, g, n): (&str, &str, &str),
        id: &ResourceId,
    ) -> Result<(bool, R)> {
        self.allow(write, id)?;
        let existing = self.existing_for_write(R::read(self.arm, s, g, n).await)?;
        let current = existing.as_ref().map(|r| &r.identity().user_assigned);
        let (identity, mode) = self.identity_for_write(write, id, current)?;
        match &existing {
            None => R::create(self, (s, g, n)).await?,
            Some(_) => R::change(self, (s, g, n)).await?,
        }
        if let Some(req) = &identity {
            let target = R::identity_target(self.arm, (s, g, n), id)?;
            self.arm
                .update_identity(R::OWNER, &target, req, mode)
                .await?;
        }
        Ok((existing.is_none(), R::read(self.arm, s, g, n).await?))
    }
}

/// A resource whose PUT/PATCH carries an `identity` block, for [`Call::write_with_identity`].
pub(super) trait Writable: Holder {
    /// The owner kind its identities are changed as.
    const OWNER: IdentityOwner;
    /// Reads it (404 when absent or being deleted).
    async fn read(arm: &Arm, s: &str, g: &str, n: &str) -> Result<Self>;
    /// Creates it from the request body.
    async fn create(c: &Call<'_>, sgn: (&str, &str, &str)) -> Result<()>;
    /// Applies the body's changes other than `identity` to it (none by default).
    async fn change(_c: &Call<'_>, _sgn: (&str, &str, &str)) -> Result<()> {
        Ok(())
    }
    /// The id its identity block is applied to (`id`: the path's).
    fn identity_target(arm: &Arm, sgn: (&str, &str, &str), id: &ResourceId) -> Result<ResourceId>;
}

impl Writable for Vm {
    const OWNER: IdentityOwner = IdentityOwner::VirtualMachine;
    async fn read(arm: &Arm, s: &str, g: &str, n: &str) -> Result<Self> {
        arm.get_vm(s, g, n).await
    }
    async fn create(c: &Call<'_>, (s, g, n): (&str, &str, &str)) -> Result<()> {
        let props = &c.body["properties"];
        let req = CreateVm {
            resource: NewResource {
                subscription_id: s.into(),
                resource_group: g.into(),
                name: n.into(),
                location: body::location(c.body),
                tags: body::tags(c.body).unwrap_or_default(),
            },
            vm_size: props["hardwareProfile"]["vmSize"]
                .as_str()
                .unwrap_or_default()
                .into(),
            os_type: props["storageProfile"]["osDisk"]["osType"]
                .as_str()
                .unwrap_or_default()
                .into(),
            ..Default::default()
        };
        c.arm.create_vm(req).await.map(drop)
    }
    fn identity_target(
        arm: &Arm,
        (s, g, n): (&str, &str, &str),
        _: &ResourceId,
    ) -> Result<ResourceId> {
        arm.vm_id(s, g, n)
    }
}

impl Writable for Vmss {
    const OWNER: IdentityOwner = IdentityOwner::ScaleSet;
    async fn read(arm: &Arm, s: &str, g: &str, n: &str) -> Result<Self> {
        arm.get_vmss(s, g, n)
    }
    async fn create(c: &Call<'_>, (s, g, n): (&str, &str, &str)) -> Result<()> {
        let req = CreateVmss {
            resource: NewResource {
                subscription_id: s.into(),
                resource_group: g.into(),
                name: n.into(),
                location: body::location(c.body),
                tags: body::tags(c.body).unwrap_or_default(),
            },
            vm_size: c.body["sku"]["name"].as_str().unwrap_or_default().into(),
            capacity: body::capacity(c.body)?.unwrap_or(1),
            ..Default::default()
        };
        c.arm.create_vmss(req).await.map(drop)
    }
    async fn change(c: &Call<'_>, (s, g, n): (&str, &str, &str)) -> Result<()> {
        match body::capacity(c.body)? {
            Some(cap) => c.arm.scale_vmss(s, g, n, cap).await.map(drop),
            None => Ok(()),
        }
    }
    fn identity_target(_: &Arm, _: (&str, &str, &str), id: &ResourceId) -> Result<ResourceId> {
        Ok(id.clone())
    }
}

pub(super) async fn vm(c: &Call<'_>, s: &str, g: &str, n: &str, id: &ResourceId) -> Result<Reply> {
    let action = |verb: &str| format!("Microsoft.Compute/virtualMachines/{verb}");
    let arm = c.arm;
    match *c.method {
        Method::GET => {
            c.allow(&action("read"), id)?;
            let vm = arm.get_vm(s, g, n).await?;
            let mut body = json::vm(&vm);
            let expand = super::super::query::param(c.query, "$expand").unwrap_or_default();
            if expand
                .split(',')
                .any(|e| e.trim().eq_ignore_ascii_case("instanceView"))
            {
                body["properties"]["instanceView"] = json::instance_view(&vm, arm.clock().now());
            }
            ok(body)
        }
        Method::PUT | Method::PATCH => {
            let (created, vm) = c
                .write_with_identity::<Vm>(&action("write"), (s, g, n), id)
                .await?;
            c.async_operation("put", id, &vm.location);
            Ok((put_status(created), json::vm(&vm)))
        }
        Method::DELETE => {
            c.allow(&action("delete"), id)?;
            let existing = arm.get_vm(s, g, n).await.ok();
            arm.delete_vm(s, g, n).await?;
            if let Some(vm) = &existing {
                c.async_operation("delete", id, &vm.location);
            }
            deleted(existing.is_some())
        }
        _ => Err(c.not_allowed()),
    }
}

/// `GET …/virtualMachines/{vm}/instanceView`.
pub(super) async fn instance_view(c: &Call<'_>, g: &str, n: &str) -> Result<Reply> {
    if c.method != Method::GET {
        return Err(c.not_allowed());
    }
    let s = c.sub.subscription_id.as_str();
    let id = ResourceId::vm(s, g, n)?;
    c.allow("Microsoft.Compute/virtualMachines/read", &id)?;
    let vm = c.arm.get_vm(s, g, n).await?;
    ok(json::instance_view(&vm, c.arm.clock().now()))
}

/// `GET …/virtualMachineScaleSets/{ss}/virtualMachines/{instanceId}` (with `$expand=instanceView`)
/// and `…/{instanceId}/instanceView`.
pub(super) async fn vmss_instance(
    c: &Call<'_>,
    g: &str,
    n: &str,
    instance: &str,
    view: bool,
) -> Result<Reply> {
    if c.method != Method::GET {
        return Err(c.not_allowed());
    }
    let s = c.sub.subscription_id.as_str();
    let id = c.arm.vmss_id(s, g, n)?;
    c.allow(
        "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
        &id,
    )?;
    let (ss, instances) = c.arm.list_vmss_instances(s, g, n).await?;
    let inst = instances
        .iter()
        .find(|i| i.id.name().eq_ignore_ascii_case(instance))
        .ok_or_else(|| ArmError::ResourceNotFound {
            resource_type: "Microsoft.Compute/virtualMachineScaleSets/virtualMachines".into(),
            name: format!("{n}/{instance}"),
            group: g.into(),
        })?;
    let now = c.arm.clock().now();
    if view {
        return ok(json::instance_view(inst, now));
    }
    let mut body = json::instance(&ss, inst);
    let expand = super::super::query::param(c.query, "$expand").unwrap_or_default();
    if expand
        .split(',')
        .any(|e| e.trim().eq_ignore_ascii_case("instanceView"))
    {
        body["properties"]["instanceView"] = json::instance_view(inst, now);
    }
    ok(body)
}

pub(super) async fn vmss(
    c: &Call<'_>,
    s: &str,
    g: &str,
    n: &str,
    id: &ResourceId,
) -> Result<Reply> {
    let action = |verb: &str| format!("Microsoft.Compute/virtualMachineScaleSets/{verb}");
    let arm = c.arm;
    match *c.method {
        Method::GET => {
            c.allow(&action("read"), id)?;
            ok(json::vmss(&arm.get_vmss(s, g, n)?))
        }
        Method::PUT | Method::PATCH => {
            let (created, ss) = c
                .write_with_identity::<Vmss>(&action("write"), (s, g, n), id)
                .await?;
            c.async_operation("put", id, &ss.location);
            Ok((put_status(created), json::vmss(&ss)))
        }
        Method::DELETE => {
            c.allow(&action("delete"), id)?;
            let existing = arm.get_vmss(s, g, n).ok();
            arm.delete_vmss(s, g, n).await?;
            if let Some(ss) = &existing {
                c.async_operation("delete", id, &ss.location);
            }
            deleted(existing.is_some())
        }
        _ => Err(c.not_allowed()),
    }
}
