//! ARM resource paths the REST surface serves, parsed case-insensitively: subscriptions (and their
//! locations, resource groups, generic `resources` lists and subscription-wide provider lists),
//! resource groups, VMs (and `instanceView`), network interfaces, scale sets (and their instances),
//! user-assigned identities, key vaults, and the extension resources ARM serves under any scope:
//! `Microsoft.Authorization/{roleAssignments,roleDefinitions,permissions}` and
//! `Microsoft.ManagedIdentity/identities/default`. The grammar is core's
//! [`misim_core::ids::ArmPath`]; this module maps its parts to the routes misim serves.

use misim_core::ids::ArmPath;

/// A resource kind under a resource group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Microsoft.Compute/virtualMachines`.
    Vm,
    /// `Microsoft.Compute/virtualMachineScaleSets`.
    Vmss,
    /// `Microsoft.ManagedIdentity/userAssignedIdentities`.
    Uami,
    /// `Microsoft.KeyVault/vaults`.
    Vault,
    /// `Microsoft.Network/networkInterfaces` (one per VM, read-only).
    Nic,
    /// `Microsoft.Web/sites` (App Service web apps and function apps).
    Site,
}

/// Every kind, in listing order.
pub const KINDS: [Kind; 6] = [
    Kind::Vm,
    Kind::Vmss,
    Kind::Uami,
    Kind::Vault,
    Kind::Nic,
    Kind::Site,
];

/// Resource provider namespaces misim serves (others are `InvalidResourceNamespace`).
pub const NAMESPACES: &[&str] = &[
    "Microsoft.Compute",
    "Microsoft.ManagedIdentity",
    "Microsoft.KeyVault",
    "Microsoft.Network",
    "Microsoft.Authorization",
    "Microsoft.Resources",
    "Microsoft.Web",
];

impl Kind {
    /// `Namespace/type`.
    pub fn resource_type(self) -> &'static str {
        match self {
            Kind::Vm => "Microsoft.Compute/virtualMachines",
            Kind::Vmss => "Microsoft.Compute/virtualMachineScaleSets",
            Kind::Uami => "Microsoft.ManagedIdentity/userAssignedIdentities",
            Kind::Vault => "Microsoft.KeyVault/vaults",
            Kind::Nic => "Microsoft.Network/networkInterfaces",
            Kind::Site => "Microsoft.Web/sites",
        }
    }

    /// The kind of a `Namespace/type` string, any case.
    pub fn from_type(full: &str) -> Option<Kind> {
        KINDS
            .into_iter()
            .find(|k| k.resource_type().eq_ignore_ascii_case(full))
    }

    fn parse(namespace: &str, ty: &str) -> Option<Kind> {
        Kind::from_type(&format!("{namespace}/{ty}"))
    }
}

/// A parsed ARM path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/subscriptions/{s}`.
    Subscription(String),
    /// `/subscriptions/{s}/locations`.
    Locations(String),
    /// `/subscriptions/{s}/resourceGroups` (list).
    Groups(String),
    /// `/subscriptions/{s}/resourceGroups/{g}`.
    Group(String, String),
    /// `/subscriptions/{s}[/resourceGroups/{g}]/resources` (generic resources list).
    Resources(String, Option<String>),
    /// `/subscriptions/{s}/providers/{ns}/{type}` (list across the subscription).
    SubCollection(String, Kind),
    /// `…/providers/{ns}/{type}` (list).
    Collection(String, String, Kind),
    /// `…/providers/{ns}/{type}/{name}`.
    Resource(String, String, Kind, String),
    /// `…/virtualMachines/{name}/instanceView`.
    InstanceView(String, String, String),
    /// `…/virtualMachineScaleSets/{name}/virtualMachines` (list instances).
    VmssInstances(String, String, String),
    /// `…/virtualMachineScaleSets/{name}/virtualMachines/{instanceId}[/instanceView]`; the flag is
    /// true for the instance view.
    VmssInstance(String, String, String, String, bool),
    /// `/subscriptions/{s}/operationresults/{id}` (a finished asynchronous operation).
    OperationResult(String, String),
    /// `/subscriptions/{s}/providers/{ns}/locations/{loc}/operations/{id}` (an asynchronous
    /// operation's status).
    Operation(String, String, String),
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments` (list).
    RoleAssignments(String),
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments/{guid}`.
    RoleAssignment(String, String),
    /// `{scope}/providers/Microsoft.Authorization/roleDefinitions` (list).
    RoleDefinitions(String),
    /// `{scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}`.
    RoleDefinition(String, String),
    /// `{scope}/providers/Microsoft.Authorization/permissions` (the caller's).
    Permissions(String),
    /// `{scope}/providers/Microsoft.ManagedIdentity/identities/default` (system-assigned identity).
    DefaultIdentity(String),
}

/// Why a path is not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathError {
    /// No such route (ARM answers 404 `NotFound`-like).
    NotFound,
    /// A namespace ARM does not know (404 `InvalidResourceNamespace`).
    Namespace(String),
    /// A known namespace without this type (400 `InvalidResourceType`).
    Type(String, String),
}

impl Target {
    /// The subscription the path is under.
    pub fn subscription(&self) -> Option<&str> {
        match self {
            Target::Subscription(s)
            | Target::Locations(s)
            | Target::Groups(s)
            | Target::Group(s, _)
            | Target::Resources(s, _)
            | Target::SubCollection(s, _)
            | Target::Collection(s, ..)
            | Target::Resource(s, ..)
            | Target::InstanceView(s, ..)
            | Target::OperationResult(s, _)
            | Target::Operation(s, ..)
            | Target::VmssInstances(s, ..)
            | Target::VmssInstance(s, ..) => Some(s),
            Target::RoleAssignments(scope)
            | Target::RoleAssignment(scope, _)
            | Target::RoleDefinitions(scope)
            | Target::RoleDefinition(scope, _)
            | Target::Permissions(scope)
            | Target::DefaultIdentity(scope) => scope.split('/').nth(2),
        }
    }
}

/// True when `s` is `word`, any case.
fn is(s: Option<&str>, word: &str) -> bool {
    s.is_some_and(|s| s.eq_ignore_ascii_case(word))
}

/// Parses a request path; `None` when ARM has no such route.
pub fn parse(path: &str) -> Option<Target> {
    parse_detailed(path).ok()
}

/// Parses a request path, split by ARM's grammar in [`misim_core::ids::ArmPath`], saying why it
/// is not served.
///
/// # Errors
/// [`PathError`] for an unknown route, namespace or resource type.
pub fn parse_detailed(path: &str) -> Result<Target, PathError> {
    let p = ArmPath::parse(path).ok_or(PathError::NotFound)?;
    // Extension resources under any scope: the last provider section.
    if let Some(last) = p.sections.last() {
        let first = last.rest.first().copied();
        let authorization = is(Some(last.namespace), "Microsoft.Authorization") && first.is_some();
        let identity =
            is(Some(last.namespace), "Microsoft.ManagedIdentity") && is(first, "identities");
        if authorization || identity {
            let scope = p.scope_of(last);
            parse_scope(&p.without_last_section())?;
            let rest = last.rest.as_slice();
            if identity {
                return match rest {
                    [_, name] if name.eq_ignore_ascii_case("default") => {
                        Ok(Target::DefaultIdentity(scope))
                    }
                    _ => Err(PathError::NotFound),
                };
            }
            let ty = rest[0];
            return match (ty.to_ascii_lowercase().as_str(), rest.len()) {
                ("roleassignments", 1) => Ok(Target::RoleAssignments(scope)),
                ("roleassignments", 2) => Ok(Target::RoleAssignment(scope, rest[1].to_string())),
                ("roledefinitions", 1) => Ok(Target::RoleDefinitions(scope)),
                ("roledefinitions", 2) => Ok(Target::RoleDefinition(scope, rest[1].to_string())),
                ("permissions", 1) => Ok(Target::Permissions(scope)),
                ("roleassignments" | "roledefinitions" | "permissions", _) => {
                    Err(PathError::NotFound)
                }
                _ => Err(PathError::Type(
                    "Microsoft.Authorization".into(),
                    ty.to_string(),
                )),
            };
        }
    }
    parse_scope(&p)
}

fn provider(namespace: &str, ty: &str) -> Result<Kind, PathError> {
    if let Some(k) = Kind::parse(namespace, ty) {
        return Ok(k);
    }
    if NAMESPACES.iter().any(|n| n.eq_ignore_ascii_case(namespace)) {
        Err(PathError::Type(namespace.to_string(), ty.to_string()))
    } else {
        Err(PathError::Namespace(namespace.to_string()))
    }
}

fn parse_scope(p: &ArmPath<'_>) -> Result<Target, PathError> {
    let s = p.subscription.to_string();
    let tail = |i: usize| p.tail.get(i).copied();
    let Some(g) = p.resource_group.map(str::to_string) else {
        // Under the subscription.
        return match (p.sections.as_slice(), p.tail.len()) {
            ([], 0) => Ok(Target::Subscription(s)),
            ([], 1) if is(tail(0), "locations") => Ok(Target::Locations(s)),
            ([], 1) if is(tail(0), "resourceGroups") => Ok(Target::Groups(s)),
            ([], 1) if is(tail(0), "resources") => Ok(Target::Resources(s, None)),
            ([], 2) if is(tail(0), "operationresults") => {
                Ok(Target::OperationResult(s, p.tail[1].to_string()))
            }
            ([sec], _) => match sec.rest.as_slice() {
                [l, _, o, id] if is(Some(l), "locations") && is(Some(o), "operations") => Ok(
                    Target::Operation(s, sec.namespace.to_string(), id.to_string()),
                ),
                [ty] => Ok(Target::SubCollection(s, provider(sec.namespace, ty)?)),
                _ => Err(PathError::NotFound),
            },
            _ => Err(PathError::NotFound),
        };
    };
    let sec = match (p.sections.as_slice(), p.tail.len()) {
        ([], 0) => return Ok(Target::Group(s, g)),
        ([], 1) if is(tail(0), "resources") => return Ok(Target::Resources(s, Some(g))),
        ([sec, ..], _) if !sec.rest.is_empty() => sec,
        _ => return Err(PathError::NotFound),
    };
    let kind = provider(sec.namespace, sec.rest[0])?;
    if p.sections.len() > 1 {
        // Extension resources other than those above.
        return Err(PathError::NotFound);
    }
    let vmss_child =
        |i: usize| kind == Kind::Vmss && is(sec.rest.get(i).copied(), "virtualMachines");
    let name = |i: usize| sec.rest[i].to_string();
    match sec.rest.len() {
        1 => Ok(Target::Collection(s, g, kind)),
        2 => Ok(Target::Resource(s, g, kind, name(1))),
        3 if vmss_child(2) => Ok(Target::VmssInstances(s, g, name(1))),
        3 if kind == Kind::Vm && is(sec.rest.get(2).copied(), "instanceView") => {
            Ok(Target::InstanceView(s, g, name(1)))
        }
        4 if vmss_child(2) => Ok(Target::VmssInstance(s, g, name(1), name(3), false)),
        5 if vmss_child(2) && is(sec.rest.get(4).copied(), "instanceView") => {
            Ok(Target::VmssInstance(s, g, name(1), name(3), true))
        }
        _ => Err(PathError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_case_insensitively() {
        assert_eq!(
            parse(
                "/SUBSCRIPTIONS/s/resourcegroups/g/PROVIDERS/microsoft.compute/VirtualMachines/vm"
            ),
            Some(Target::Resource(
                "s".into(),
                "g".into(),
                Kind::Vm,
                "vm".into()
            ))
        );
        assert_eq!(
            parse("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachineScaleSets"),
            Some(Target::Collection("s".into(), "g".into(), Kind::Vmss))
        );
        assert_eq!(
            parse("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines"),
            Some(Target::VmssInstances("s".into(), "g".into(), "ss".into()))
        );
        assert_eq!(
            parse("/subscriptions/s"),
            Some(Target::Subscription("s".into()))
        );
        assert!(parse("/subscriptions/s/foo/g").is_none());
        assert!(parse("/tenants").is_none());
    }

    #[test]
    fn lists_and_sub_resources_parse() {
        assert_eq!(
            parse("/subscriptions/s/resourcegroups"),
            Some(Target::Groups("s".into()))
        );
        assert_eq!(
            parse("/subscriptions/s/locations"),
            Some(Target::Locations("s".into()))
        );
        assert_eq!(
            parse("/subscriptions/s/resources"),
            Some(Target::Resources("s".into(), None))
        );
        assert_eq!(
            parse("/subscriptions/s/resourceGroups/g/resources"),
            Some(Target::Resources("s".into(), Some("g".into())))
        );
        assert_eq!(
            parse("/subscriptions/s/providers/Microsoft.Compute/virtualMachines"),
            Some(Target::SubCollection("s".into(), Kind::Vm))
        );
        assert_eq!(
            parse("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/3/instanceView"),
            Some(Target::VmssInstance("s".into(), "g".into(), "ss".into(), "3".into(), true))
        );
        assert_eq!(
            parse("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v/instanceView"),
            Some(Target::InstanceView("s".into(), "g".into(), "v".into()))
        );
        assert_eq!(
            parse("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v/providers/Microsoft.ManagedIdentity/identities/default"),
            Some(Target::DefaultIdentity("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v".into()))
        );
        assert_eq!(
            parse("/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/abc"),
            Some(Target::RoleDefinition(
                "/subscriptions/s".into(),
                "abc".into()
            ))
        );
        assert_eq!(
            parse_detailed("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/d"),
            Err(PathError::Type("Microsoft.Compute".into(), "disks".into()))
        );
        assert_eq!(
            parse_detailed("/subscriptions/s/providers/Microsoft.Nope/things"),
            Err(PathError::Namespace("Microsoft.Nope".into()))
        );
    }

    #[test]
    fn role_assignments_parse_under_any_scope() {
        let t = parse("/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u/providers/Microsoft.Authorization/roleAssignments/abc").unwrap();
        assert_eq!(
            t,
            Target::RoleAssignment(
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u".into(),
                "abc".into()
            )
        );
        assert_eq!(t.subscription(), Some("s"));
        assert_eq!(
            parse("/subscriptions/s/providers/Microsoft.Authorization/roleAssignments"),
            Some(Target::RoleAssignments("/subscriptions/s".into()))
        );
    }
}
