//! The list and read-only paths the Azure CLI and the management SDKs call around the resources:
//! `GET /tenants`, `GET /subscriptions`, locations, resource groups, generic `resources` (with
//! `$filter`, `$top`, `nextLink`), subscription-wide provider lists, network interfaces, role
//! definitions and assignments (with `atScope()`, `principalId eq`, `assignedTo()`), the caller's
//! `permissions`, `identities/default` and finished asynchronous operations.
//!
//! Lists show what the caller may read, as ARM does: items without `{type}/read` for the caller are
//! left out (a group-scoped list without read on the group is 403).

use axum::http::{Method, StatusCode};
use misim_core::ResourceId;
use serde_json::{json, Value};

use super::json as shapes;

use super::auth::Caller;
use super::path::{Kind, KINDS};
use super::query::{self, Clause};
use super::resources::{ok, Call, Reply};
use super::{Fail, Request};
use crate::error::{ArmError, Result};
use crate::rbac::{find_role, BUILT_IN_ROLES};
use crate::service::Arm;

fn bad_request(message: String) -> Fail {
    Fail::Api(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn get_only(c: &Call<'_>) -> Result<()> {
    if *c.method == Method::GET {
        Ok(())
    } else {
        Err(c.not_allowed())
    }
}

fn paged(c: &Call<'_>, items: Vec<Value>) -> std::result::Result<Reply, Fail> {
    let body = query::page(items, c.base, c.path, c.query).map_err(bad_request)?;
    Ok((StatusCode::OK, body))
}

/// `GET /tenants` (Tenants - List): the caller's tenant.
///
/// # Errors
/// Store failures.
pub fn tenants(_arm: &Arm, caller: &Caller) -> Result<Reply> {
    ok(json!({ "value": [{
        "id": format!("/tenants/{}", caller.tenant_id),
        "tenantId": caller.tenant_id,
        "countryCode": "US",
        "displayName": "misim",
        "domains": ["misim.onmicrosoft.com"],
        "tenantCategory": "Home",
        "defaultDomain": "misim.onmicrosoft.com",
        "tenantType": "AAD"
    }] }))
}

/// `GET /subscriptions` (Subscriptions - List): the subscriptions of the caller's tenant in which
/// the caller holds a role assignment at any scope, as ARM lists them.
///
/// # Errors
/// Store failures.
pub fn subscriptions(arm: &Arm, caller: &Caller, req: &Request<'_>) -> Result<Reply> {
    let assignments = arm.store().role_assignments.values()?;
    let subs: Vec<Value> = arm
        .list_subscriptions()?
        .into_iter()
        .filter(|s| s.tenant_id.eq_ignore_ascii_case(&caller.tenant_id))
        .filter(|s| {
            assignments.iter().any(|ra| {
                ra.principal_id.eq_ignore_ascii_case(&caller.object_id)
                    && ra
                        .scope
                        .subscription_id()
                        .eq_ignore_ascii_case(&s.subscription_id)
            })
        })
        .map(|s| shapes::subscription(&s))
        .collect();
    let _ = req;
    let n = subs.len();
    ok(json!({ "value": subs, "count": { "type": "Total", "value": n } }))
}

/// Azure regions misim lists (name, display name, geography, latitude, longitude, paired region).
const REGIONS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "westeurope",
        "West Europe",
        "Europe",
        "52.3667",
        "4.9",
        "northeurope",
    ),
    (
        "northeurope",
        "North Europe",
        "Europe",
        "53.3478",
        "-6.2597",
        "westeurope",
    ),
    ("eastus", "East US", "US", "37.3719", "-79.8164", "westus"),
    ("westus", "West US", "US", "37.783", "-122.417", "eastus"),
    (
        "westus2",
        "West US 2",
        "US",
        "47.233",
        "-119.852",
        "westcentralus",
    ),
    ("uksouth", "UK South", "UK", "50.941", "-0.799", "ukwest"),
];

/// `GET /subscriptions/{s}/locations` (Subscriptions - List Locations).
///
/// # Errors
/// 403 without `Microsoft.Resources/subscriptions/locations/read` on the subscription.
pub fn locations(c: &Call<'_>) -> Result<Reply> {
    get_only(c)?;
    c.allow(
        "Microsoft.Resources/subscriptions/locations/read",
        &c.sub.id(),
    )?;
    let s = &c.sub.subscription_id;
    let value: Vec<Value> = REGIONS
        .iter()
        .map(|(name, display, geo, lat, lon, pair)| {
            json!({
                "id": format!("/subscriptions/{s}/locations/{name}"),
                "name": name,
                "type": "Region",
                "displayName": display,
                "regionalDisplayName": format!("({geo}) {display}"),
                "metadata": {
                    "regionType": "Physical",
                    "regionCategory": "Recommended",
                    "geographyGroup": geo,
                    "latitude": lat,
                    "longitude": lon,
                    "pairedRegion": [{ "name": pair, "id": format!("/subscriptions/{s}/locations/{pair}") }]
                }
            })
        })
        .collect();
    ok(shapes::list(value))
}

fn readable(c: &Call<'_>, action: &str, id: &ResourceId) -> bool {
    c.arm
        .authorize(&c.caller.object_id, action, id)
        .unwrap_or(false)
}

/// `GET /subscriptions/{s}/resourcegroups` (Resource Groups - List), with `$filter` on `tagName` /
/// `tagValue` and `$top` paging; only the groups the caller can read.
///
/// # Errors
/// Lookup errors, a bad `$filter` or `$top`.
pub fn groups(c: &Call<'_>) -> std::result::Result<Reply, Fail> {
    get_only(c)?;
    let clauses = query::filter(c.query).map_err(bad_request)?;
    let tag = query::eq(&clauses, "tagName");
    let tag_value = query::eq(&clauses, "tagValue");
    let items: Vec<Value> = c
        .arm
        .list_groups(&c.sub.subscription_id)?
        .into_iter()
        .filter(|g| {
            readable(
                c,
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                &g.id,
            )
        })
        .filter(|g| match tag {
            Some(t) => g
                .tags
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case(t) && tag_value.is_none_or(|tv| tv == v)),
            None => true,
        })
        .map(|g| shapes::resource_group(&g))
        .collect();
    paged(c, items)
}

/// Every resource of `kind` within `scope` as its full ARM body.
fn bodies(c: &Call<'_>, kind: Kind, scope: &ResourceId) -> Result<Vec<(ResourceId, Value)>> {
    let store = c.arm.store();
    Ok(match kind {
        Kind::Vm => store
            .live_within::<crate::model::Vm>(scope)?
            .iter()
            .map(|v| (v.id.clone(), shapes::vm(v)))
            .collect(),
        Kind::Nic => store
            .live_within::<crate::model::Vm>(scope)?
            .iter()
            .filter_map(|v| {
                let nic = shapes::nic(v);
                ResourceId::parse(nic["id"].as_str().unwrap_or_default())
                    .ok()
                    .map(|id| (id, nic))
            })
            .collect(),
        Kind::Vmss => store
            .live_within::<crate::model::Vmss>(scope)?
            .iter()
            .map(|v| (v.id.clone(), shapes::vmss(v)))
            .collect(),
        Kind::Uami => store
            .live_within::<crate::model::Uami>(scope)?
            .iter()
            .map(|u| (u.id.clone(), shapes::uami(u, c.api)))
            .collect(),
        Kind::Vault => store
            .vaults
            .values()?
            .iter()
            .filter(|v| v.id.is_within(scope))
            .map(|v| (v.id.clone(), shapes::vault(v)))
            .collect(),
        Kind::Site => store
            .live_within::<crate::model::WebApp>(scope)?
            .iter()
            .map(|w| (w.id.clone(), super::resources::site_json(w)))
            .collect(),
    })
}

fn scope_of(c: &Call<'_>, group: Option<&str>) -> Result<ResourceId> {
    match group {
        Some(g) => Ok(c.arm.group(&c.sub.subscription_id, g)?.id),
        None => Ok(c.sub.id()),
    }
}

/// `GET /subscriptions/{s}[/resourceGroups/{g}]/resources` (Resources - List / List By Resource
/// Group): `$filter` on `resourceGroup`, `resourceType`, `name`, `location`, `tagName`/`tagValue`;
/// `$expand` is accepted (misim has no extra properties to add); `$top` pages with a `nextLink`.
///
/// # Errors
/// Lookup errors, 403 without read on the group, a bad `$filter` or `$top`.
pub fn resources(c: &Call<'_>, group: Option<&str>) -> std::result::Result<Reply, Fail> {
    get_only(c)?;
    let clauses = query::filter(c.query).map_err(bad_request)?;
    let scope = scope_of(c, group)?;
    if group.is_some() {
        c.allow(
            "Microsoft.Resources/subscriptions/resourceGroups/resources/read",
            &scope,
        )?;
    }
    let group_filter = query::eq(&clauses, "resourceGroup");
    let type_filter = query::eq(&clauses, "resourceType");
    let name_filter = query::eq(&clauses, "name");
    let location_filter = query::eq(&clauses, "location");
    let tag = query::eq(&clauses, "tagName");
    let tag_value = query::eq(&clauses, "tagValue");
    let mut items = Vec::new();
    for kind in KINDS {
        if type_filter.is_some_and(|t| !t.eq_ignore_ascii_case(kind.resource_type())) {
            continue;
        }
        for (id, body) in bodies(c, kind, &scope)? {
            let keep = group_filter.is_none_or(|g| {
                id.resource_group_name()
                    .is_some_and(|n| n.eq_ignore_ascii_case(g))
            }) && name_filter.is_none_or(|n| id.name().eq_ignore_ascii_case(n))
                && location_filter.is_none_or(|l| {
                    body["location"]
                        .as_str()
                        .is_some_and(|x| x.eq_ignore_ascii_case(l))
                })
                && tag.is_none_or(|t| {
                    body["tags"].as_object().is_some_and(|m| {
                        m.iter().any(|(k, v)| {
                            k.eq_ignore_ascii_case(t)
                                && tag_value.is_none_or(|tv| v.as_str() == Some(tv))
                        })
                    })
                })
                && readable(c, &format!("{}/read", kind.resource_type()), &id);
            if keep {
                items.push(shapes::generic(&body));
            }
        }
    }
    paged(c, items)
}

/// `GET /subscriptions/{s}/providers/{ns}/{type}` (e.g. Virtual Machines - List All): every
/// resource of the type the caller can read, in every group.
///
/// # Errors
/// Store failures, a bad `$top`.
pub fn sub_collection(c: &Call<'_>, kind: Kind) -> std::result::Result<Reply, Fail> {
    get_only(c)?;
    let action = format!("{}/read", kind.resource_type());
    let items: Vec<Value> = bodies(c, kind, &c.sub.id())?
        .into_iter()
        .filter(|(id, _)| readable(c, &action, id))
        .map(|(_, b)| b)
        .collect();
    paged(c, items)
}

/// `GET …/resourceGroups/{g}/providers/Microsoft.Network/networkInterfaces`.
///
/// # Errors
/// Lookup errors, 403 without read on the group.
pub fn nics(c: &Call<'_>, group: &str) -> std::result::Result<Reply, Fail> {
    get_only(c)?;
    let scope = scope_of(c, Some(group))?;
    c.allow("Microsoft.Network/networkInterfaces/read", &scope)?;
    let items = bodies(c, Kind::Nic, &scope)?
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    paged(c, items)
}

/// `GET …/Microsoft.Network/networkInterfaces/{vm}VMNic` (Network Interfaces - Get).
///
/// # Errors
/// 403, [`ArmError::ResourceNotFound`].
pub async fn nic(c: &Call<'_>, group: &str, name: &str) -> Result<Reply> {
    get_only(c)?;
    let s = &c.sub.subscription_id;
    let id = ResourceId::parse(&format!(
        "/subscriptions/{s}/resourceGroups/{group}/providers/Microsoft.Network/networkInterfaces/{name}"
    ))?;
    c.allow("Microsoft.Network/networkInterfaces/read", &id)?;
    let not_found = || ArmError::ResourceNotFound {
        resource_type: "Microsoft.Network/networkInterfaces".into(),
        name: name.into(),
        group: group.into(),
    };
    let vm_name = name
        .len()
        .checked_sub(5)
        .and_then(|n| {
            name.get(..n)
                .filter(|_| name[n..].eq_ignore_ascii_case("VMNic"))
        })
        .ok_or_else(not_found)?;
    let vm = c
        .arm
        .get_vm(s, group, vm_name)
        .await
        .map_err(|_| not_found())?;
    ok(shapes::nic(&vm))
}

/// `GET /subscriptions/{s}/operationresults/{id}`: misim finishes asynchronous operations before
/// accepting them, so every result it hands out is complete (200, as ARM answers a finished one).
///
/// # Errors
/// 405 for other methods.
pub fn operation_result(c: &Call<'_>) -> Result<Reply> {
    get_only(c)?;
    Ok((StatusCode::OK, Value::Null))
}

/// `GET /subscriptions/{s}/providers/{ns}/locations/{loc}/operations/{id}[?monitor=true]`: the
/// status of an asynchronous PUT or DELETE misim accepted (`async_operation`): `Succeeded` once the
/// resource reached the requested state (provisioned, or gone), else `InProgress` with
/// `Retry-After: 1`. With `monitor=true` (the `Location` form): 202 while in progress, then 200.
///
/// # Errors
/// 404 for an operation id misim did not hand out.
pub async fn operation_status(c: &Call<'_>, op: &str) -> Result<Reply> {
    use base64::Engine;
    get_only(c)?;
    let unknown = || ArmError::RouteNotFound(format!("operation '{op}'"));
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(op)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .ok_or_else(unknown)?;
    let id =
        ResourceId::parse(decoded["id"].as_str().unwrap_or_default()).map_err(|_| unknown())?;
    if !id
        .subscription_id()
        .eq_ignore_ascii_case(&c.sub.subscription_id)
    {
        return Err(unknown());
    }
    let store = c.arm.store();
    let state = if let Some(vm) = store.vm(&id)? {
        (!vm.deleting).then(|| vm.provisioning_state())
    } else if let Some(ss) = store.vmss.get(&id.key())? {
        (!ss.deleting).then(|| ss.provisioning_state())
    } else {
        None
    };
    let done = match decoded["v"].as_str() {
        Some("delete") => state.is_none(),
        _ => state == Some("Succeeded"),
    };
    let started = shapes::rfc3339(decoded["t"].as_i64().unwrap_or_default());
    if super::query::param(c.query, "monitor").is_some_and(|m| m.eq_ignore_ascii_case("true")) {
        if !done {
            c.extra
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(("retry-after", "1".into()));
            return Ok((StatusCode::ACCEPTED, Value::Null));
        }
        return Ok((StatusCode::OK, Value::Null));
    }
    let mut body = json!({ "name": op, "startTime": started, "status": if done { "Succeeded" } else { "InProgress" } });
    if done {
        body["endTime"] = json!(shapes::rfc3339(c.arm.clock().now()));
    } else {
        c.extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(("retry-after", "1".into()));
    }
    ok(body)
}

/// `GET {scope}/providers/Microsoft.Authorization/roleDefinitions` (Role Definitions - List), with
/// `$filter=roleName eq '…'` or `type eq 'BuiltInRole'`.
///
/// # Errors
/// 403 without `roleDefinitions/read`, a bad `$filter`.
pub fn role_definitions(c: &Call<'_>, scope: &str) -> std::result::Result<Reply, Fail> {
    get_only(c)?;
    let scope_id = ResourceId::parse(scope).map_err(ArmError::from)?;
    c.allow("Microsoft.Authorization/roleDefinitions/read", &scope_id)?;
    let clauses = query::filter(c.query).map_err(bad_request)?;
    let name = query::eq(&clauses, "roleName");
    let ty = query::eq(&clauses, "type");
    let items: Vec<Value> = BUILT_IN_ROLES
        .iter()
        .filter(|r| name.is_none_or(|n| r.role_name.eq_ignore_ascii_case(n)))
        .filter(|_| ty.is_none_or(|t| t.eq_ignore_ascii_case("BuiltInRole")))
        .map(|r| shapes::role_definition(r, scope))
        .collect();
    paged(c, items)
}

/// `GET {scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}` (Role Definitions - Get).
///
/// # Errors
/// 403, 404 `RoleDefinitionDoesNotExist`.
pub fn role_definition(c: &Call<'_>, scope: &str, name: &str) -> Result<Reply> {
    get_only(c)?;
    let scope_id = ResourceId::parse(scope).map_err(ArmError::from)?;
    c.allow("Microsoft.Authorization/roleDefinitions/read", &scope_id)?;
    let role = uuid::Uuid::parse_str(name)
        .ok()
        .and_then(|_| find_role(name))
        .ok_or_else(|| ArmError::RoleDefinitionNotFound(name.to_string()))?;
    ok(shapes::role_definition(role, scope))
}

/// `GET {scope}/providers/Microsoft.Authorization/permissions` (Permissions - List For Resource /
/// Resource Group): the caller's effective permissions there, one entry per role that applies.
///
/// # Errors
/// Scope parse errors.
pub fn permissions(c: &Call<'_>, scope: &str) -> Result<Reply> {
    get_only(c)?;
    let scope_id = ResourceId::parse(scope).map_err(ArmError::from)?;
    let value: Vec<Value> = c
        .arm
        .store()
        .role_assignments
        .values()?
        .iter()
        .filter(|ra| {
            ra.principal_id.eq_ignore_ascii_case(&c.caller.object_id)
                && scope_id.is_within(&ra.scope)
        })
        .filter_map(|ra| find_role(&ra.role_definition_guid))
        .map(|r| {
            json!({
                "actions": r.actions,
                "notActions": r.not_actions,
                "dataActions": r.data_actions,
                "notDataActions": r.not_data_actions
            })
        })
        .collect();
    ok(shapes::list(value))
}

/// `GET {scope}/providers/Microsoft.Authorization/roleAssignments` (Role Assignments - List For
/// Scope): without a filter, the assignments at, above and below the scope; `atScope()` keeps those
/// at or above it; `principalId eq '…'` and `assignedTo('…')` keep one principal's.
///
/// # Errors
/// 403 without `roleAssignments/read`, a bad `$filter`.
pub fn role_assignments(c: &Call<'_>, scope: &str) -> std::result::Result<Reply, Fail> {
    get_only(c)?;
    let scope_id = ResourceId::parse(scope).map_err(ArmError::from)?;
    c.allow("Microsoft.Authorization/roleAssignments/read", &scope_id)?;
    let clauses = query::filter(c.query).map_err(bad_request)?;
    let at_scope = clauses.contains(&Clause::AtScope);
    let principal = query::eq(&clauses, "principalId").or_else(|| {
        clauses.iter().find_map(|cl| match cl {
            Clause::AssignedTo(p) => Some(p.as_str()),
            _ => None,
        })
    });
    let items: Vec<Value> = c
        .arm
        .store()
        .role_assignments
        .values()
        .map_err(ArmError::from)?
        .iter()
        .filter(|ra| scope_id.is_within(&ra.scope) || (!at_scope && ra.scope.is_within(&scope_id)))
        .filter(|ra| principal.is_none_or(|p| ra.principal_id.eq_ignore_ascii_case(p)))
        .map(shapes::role_assignment)
        .collect();
    paged(c, items)
}

/// `GET {scope}/providers/Microsoft.ManagedIdentity/identities/default` (System Assigned
/// Identities - Get By Scope): the system-assigned identity of a VM or scale set.
///
/// # Errors
/// 403 without `Microsoft.ManagedIdentity/identities/read`, 404 when the resource has none.
pub async fn default_identity(c: &Call<'_>, scope: &str) -> Result<Reply> {
    get_only(c)?;
    let scope_id = ResourceId::parse(scope).map_err(ArmError::from)?;
    c.allow("Microsoft.ManagedIdentity/identities/read", &scope_id)?;
    let not_found = || ArmError::ResourceNotFound {
        resource_type: "Microsoft.ManagedIdentity/identities".into(),
        name: "default".into(),
        group: scope_id.resource_group_name().unwrap_or_default().into(),
    };
    let store = c.arm.store();
    let (location, ids) = if let Some(vm) = store.vm(&scope_id)?.filter(|v| !v.deleting) {
        (
            vm.location.clone(),
            vm.identity.enabled_system_identity().cloned(),
        )
    } else if let Some(ss) = store.vmss.get(&scope_id.key())?.filter(|v| !v.deleting) {
        (
            ss.location.clone(),
            ss.identity.enabled_system_identity().cloned(),
        )
    } else {
        return Err(not_found());
    };
    let ids = ids.ok_or_else(not_found)?;
    ok(json!({
        "id": format!("{scope}/providers/Microsoft.ManagedIdentity/identities/default"),
        "name": "default",
        "type": "Microsoft.ManagedIdentity/identities",
        "location": location,
        "tags": {},
        "properties": {
            "tenantId": ids.tenant_id,
            "principalId": ids.principal_id,
            "clientId": ids.client_id
        }
    }))
}
