//! VMs and scale sets on the REST surface: GET, PUT/PATCH (create, capacity, and the `identity`
//! block with ARM's PUT/PATCH semantics, checking `…/assign/action` on every newly attached
//! user-assigned identity) and DELETE.

use std::collections::BTreeMap;

use axum::http::Method;
use misim_core::ResourceId;
use serde_json::Value;

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

    /// The resource a PUT creates at `sgn`, with the body's `location` and `tags`.
    pub(super) fn new_resource(&self, (s, g, n): (&str, &str, &str)) -> NewResource {
        NewResource {
            subscription_id: s.into(),
            resource_group: g.into(),
            name: n.into(),
            location: body::location(self.body),
            tags: body::tags(self.body).unwrap_or_default(),
        }
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

/// A REST resource whose PUT/PATCH carries an `identity` block (VM, scale set, web app), served by
/// [`resource_with_identity`] and written by [`Call::write_with_identity`].
pub(super) trait Writable: Holder {
    /// The owner kind its identities are changed as.
    const OWNER: IdentityOwner;
    /// Whether PUT/PATCH and DELETE answer with ARM's asynchronous-operation headers
    /// ([`Call::async_operation`]), as Compute does (the default).
    const ASYNC_OPERATION: bool = true;
    /// Reads it (404 when absent or being deleted).
    async fn read(arm: &Arm, s: &str, g: &str, n: &str) -> Result<Self>;
    /// Deletes it (nothing when absent).
    async fn delete(arm: &Arm, s: &str, g: &str, n: &str) -> Result<()>;
    /// Its REST body.
    fn to_json(&self) -> Value;
    /// Its body for a GET (`to_json` unless the request's query asks for more).
    fn get_json(&self, _c: &Call<'_>) -> Value {
        self.to_json()
    }
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
    async fn delete(arm: &Arm, s: &str, g: &str, n: &str) -> Result<()> {
        arm.delete_vm(s, g, n).await
    }
    fn to_json(&self) -> Value {
        json::vm(self)
    }
    /// Adds `properties.instanceView` when `$expand` names `instanceView`.
    fn get_json(&self, c: &Call<'_>) -> Value {
        let mut body = json::vm(self);
        if expands_instance_view(c) {
            body["properties"]["instanceView"] = json::instance_view(self, c.arm.clock().now());
        }
        body
    }
    async fn create(c: &Call<'_>, (s, g, n): (&str, &str, &str)) -> Result<()> {
        let props = &c.body["properties"];
        let req = CreateVm {
            resource: c.new_resource((s, g, n)),
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
    async fn delete(arm: &Arm, s: &str, g: &str, n: &str) -> Result<()> {
        arm.delete_vmss(s, g, n).await
    }
    fn to_json(&self) -> Value {
        json::vmss(self)
    }
    async fn create(c: &Call<'_>, (s, g, n): (&str, &str, &str)) -> Result<()> {
        let req = CreateVmss {
            resource: c.new_resource((s, g, n)),
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

/// GET, PUT/PATCH and DELETE of a resource with an `identity` block: checks `{TYPE}/read`,
/// `…/write` or `…/delete` on `id`; PUT answers 201 (created) or 200 with the body, DELETE 200
/// (deleted) or 204 (absent); both add the asynchronous-operation headers where
/// [`Writable::ASYNC_OPERATION`] says so.
///
/// # Errors
/// Authorization, the body's errors, those of the ARM calls, and 405 for other methods.
pub(super) async fn resource_with_identity<R: Writable>(
    c: &Call<'_>,
    s: &str,
    g: &str,
    n: &str,
    id: &ResourceId,
) -> Result<Reply> {
    let action = |verb: &str| format!("{}/{verb}", R::TYPE);
    match *c.method {
        Method::GET => {
            c.allow(&action("read"), id)?;
            ok(R::read(c.arm, s, g, n).await?.get_json(c))
        }
        Method::PUT | Method::PATCH => {
            let (created, r) = c
                .write_with_identity::<R>(&action("write"), (s, g, n), id)
                .await?;
            if R::ASYNC_OPERATION {
                c.async_operation("put", id, r.location());
            }
            Ok((put_status(created), r.to_json()))
        }
        Method::DELETE => {
            c.allow(&action("delete"), id)?;
            let existing = R::read(c.arm, s, g, n).await.ok();
            R::delete(c.arm, s, g, n).await?;
            if let (true, Some(r)) = (R::ASYNC_OPERATION, &existing) {
                c.async_operation("delete", id, r.location());
            }
            deleted(existing.is_some())
        }
        _ => Err(c.not_allowed()),
    }
}

/// Whether the query's `$expand` names `instanceView`.
fn expands_instance_view(c: &Call<'_>) -> bool {
    super::super::query::param(c.query, "$expand")
        .unwrap_or_default()
        .split(',')
        .any(|e| e.trim().eq_ignore_ascii_case("instanceView"))
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
    if expands_instance_view(c) {
        body["properties"]["instanceView"] = json::instance_view(inst, now);
    }
    ok(body)
}
