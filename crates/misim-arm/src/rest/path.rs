//! ARM resource paths the REST surface serves, parsed case-insensitively: subscriptions, resource
//! groups, VMs, scale sets (and their instances), user-assigned identities, key vaults, and role
//! assignments under any scope (`{scope}/providers/Microsoft.Authorization/roleAssignments/{guid}`).

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
}

impl Kind {
    /// `Namespace/type`.
    pub fn resource_type(self) -> &'static str {
        match self {
            Kind::Vm => "Microsoft.Compute/virtualMachines",
            Kind::Vmss => "Microsoft.Compute/virtualMachineScaleSets",
            Kind::Uami => "Microsoft.ManagedIdentity/userAssignedIdentities",
            Kind::Vault => "Microsoft.KeyVault/vaults",
        }
    }

    fn parse(namespace: &str, ty: &str) -> Option<Kind> {
        [Kind::Vm, Kind::Vmss, Kind::Uami, Kind::Vault]
            .into_iter()
            .find(|k| {
                k.resource_type()
                    .eq_ignore_ascii_case(&format!("{namespace}/{ty}"))
            })
    }
}

/// A parsed ARM path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/subscriptions/{s}`.
    Subscription(String),
    /// `/subscriptions/{s}/resourceGroups/{g}`.
    Group(String, String),
    /// `…/providers/{ns}/{type}` (list).
    Collection(String, String, Kind),
    /// `…/providers/{ns}/{type}/{name}`.
    Resource(String, String, Kind, String),
    /// `…/virtualMachineScaleSets/{name}/virtualMachines` (list instances).
    VmssInstances(String, String, String),
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments` (list).
    RoleAssignments(String),
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments/{guid}`.
    RoleAssignment(String, String),
}

impl Target {
    /// The subscription the path is under.
    pub fn subscription(&self) -> Option<&str> {
        match self {
            Target::Subscription(s)
            | Target::Group(s, _)
            | Target::Collection(s, ..)
            | Target::Resource(s, ..)
            | Target::VmssInstances(s, ..) => Some(s),
            Target::RoleAssignments(scope) | Target::RoleAssignment(scope, _) => {
                scope.split('/').nth(2)
            }
        }
    }
}

fn is(seg: &[&str], i: usize, word: &str) -> bool {
    seg.get(i).is_some_and(|s| s.eq_ignore_ascii_case(word))
}

/// Parses a request path; `None` when ARM has no such route.
pub fn parse(path: &str) -> Option<Target> {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Role assignments under any scope.
    if let Some(p) = (0..seg.len()).rev().find(|&i| {
        is(&seg, i, "providers")
            && is(&seg, i + 1, "Microsoft.Authorization")
            && is(&seg, i + 2, "roleAssignments")
    }) {
        let scope = format!("/{}", seg[..p].join("/"));
        parse_scope(&seg[..p])?;
        return match seg.len() - p {
            3 => Some(Target::RoleAssignments(scope)),
            4 => Some(Target::RoleAssignment(scope, seg[p + 3].to_string())),
            _ => None,
        };
    }
    parse_scope(&seg)
}

fn parse_scope(seg: &[&str]) -> Option<Target> {
    if !is(seg, 0, "subscriptions") || seg.len() < 2 {
        return None;
    }
    let s = seg[1].to_string();
    if seg.len() == 2 {
        return Some(Target::Subscription(s));
    }
    if !is(seg, 2, "resourceGroups") || seg.len() < 4 {
        return None;
    }
    let g = seg[3].to_string();
    if seg.len() == 4 {
        return Some(Target::Group(s, g));
    }
    if !is(seg, 4, "providers") || seg.len() < 7 {
        return None;
    }
    let kind = Kind::parse(seg[5], seg[6])?;
    match seg.len() {
        7 => Some(Target::Collection(s, g, kind)),
        8 => Some(Target::Resource(s, g, kind, seg[7].to_string())),
        9 if kind == Kind::Vmss && is(seg, 8, "virtualMachines") => {
            Some(Target::VmssInstances(s, g, seg[7].to_string()))
        }
        _ => None,
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
