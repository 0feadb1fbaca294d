//! Azure's built-in role definitions (real GUIDs, actions and data actions from the Azure built-in
//! roles page) and the wildcard matching Azure RBAC applies to operations.

/// A role definition: control-plane `actions`/`notActions` and data-plane
/// `dataActions`/`notDataActions`, evaluated separately as Azure RBAC does.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleDefinition {
    /// Role definition GUID (Azure's built-in id).
    pub guid: &'static str,
    /// `Owner`, `Contributor`, `Reader`.
    pub role_name: &'static str,
    /// Azure's description.
    pub description: &'static str,
    /// Allowed actions (may contain `*`).
    pub actions: &'static [&'static str],
    /// Actions subtracted from `actions`.
    pub not_actions: &'static [&'static str],
    /// Data-plane actions.
    pub data_actions: &'static [&'static str],
    /// Data-plane actions subtracted from `data_actions`.
    pub not_data_actions: &'static [&'static str],
}

/// Azure's built-in roles used by misim (ids and permissions from the Azure built-in roles page).
pub const BUILT_IN_ROLES: &[RoleDefinition] = &[
    RoleDefinition {
        guid: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        role_name: "Owner",
        description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        role_name: "Contributor",
        description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, manage assignments in Azure Blueprints, or share image galleries.",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
            "Microsoft.Purview/consents/write",
            "Microsoft.Purview/consents/delete",
            "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
            "Microsoft.Subscription/cancel/action",
            "Microsoft.Subscription/enable/action",
        ],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        role_name: "Reader",
        description: "View all resources, but does not allow you to make any changes.",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        role_name: "User Access Administrator",
        description: "Lets you manage user access to Azure resources.",
        actions: &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "f1a07417-d97a-45cb-824c-7a7467783830",
        role_name: "Managed Identity Operator",
        description: "Read and Assign User Assigned Identity",
        actions: &[
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "4633458b-17de-408a-b874-0445c86b69e6",
        role_name: "Key Vault Secrets User",
        description: "Read secret contents. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        role_name: "Key Vault Secrets Officer",
        description: "Perform any action on the secrets of a key vault, except manage permissions. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Support/*",
            "Microsoft.KeyVault/checkNameAvailability/read",
            "Microsoft.KeyVault/deletedVaults/read",
            "Microsoft.KeyVault/locations/*/read",
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/operations/read",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/secrets/*"],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        role_name: "Storage Blob Data Reader",
        description: "Read and list Azure Storage containers and blobs.",
        actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"],
        not_data_actions: &[],
    },
];

/// True when `action` matches `pattern`, where `*` matches any run of characters and `/*/` also
/// matches a single `/` (so `…/userAssignedIdentities/*/assign/action` grants
/// `…/userAssignedIdentities/assign/action`, as the Managed Identity Operator role does);
/// case-insensitive as Azure RBAC compares operations.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    glob_matches(pattern, action)
        || (pattern.contains("/*/") && glob_matches(&pattern.replace("/*/", "/"), action))
}

fn glob_matches(pattern: &str, action: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let a = action.to_ascii_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == a;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !a.starts_with(first)
        || !a[first.len()..].ends_with(last)
        || a.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &a[first.len()..a.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl RoleDefinition {
    /// True when the role permits `action` (some action matches and no notAction does).
    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|p| action_matches(p, action))
            && !self.not_actions.iter().any(|p| action_matches(p, action))
    }

    /// True when the role permits the data action (some dataAction matches, no notDataAction does).
    pub fn allows_data(&self, data_action: &str) -> bool {
        self.data_actions
            .iter()
            .any(|p| action_matches(p, data_action))
            && !self
                .not_data_actions
                .iter()
                .any(|p| action_matches(p, data_action))
    }

    /// `/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{guid}`.
    pub fn id(&self, subscription_id: &str) -> String {
        format!(
            "/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{}",
            self.guid
        )
    }
}

/// Finds a built-in role by name (`Reader`, any case), GUID or full role definition id.
pub fn find_role(role: &str) -> Option<&'static RoleDefinition> {
    let guid = role.rsplit('/').next().unwrap_or(role);
    BUILT_IN_ROLES
        .iter()
        .find(|r| r.role_name.eq_ignore_ascii_case(role) || r.guid.eq_ignore_ascii_case(guid))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn wildcards_match_like_azure_rbac() {
        assert!(action_matches(
            "*",
            "Microsoft.Compute/virtualMachines/read"
        ));
        assert!(action_matches(
            "*/read",
            "microsoft.compute/virtualmachines/READ"
        ));
        assert!(!action_matches(
            "*/read",
            "Microsoft.Compute/virtualMachines/write"
        ));
        assert!(action_matches(
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/roleAssignments/write"
        ));
        assert!(!action_matches(
            "Microsoft.Authorization/*/Write",
            "Microsoft.Compute/virtualMachines/write"
        ));
        assert!(action_matches("a*b*c", "aXbYc"));
        assert!(!action_matches("ab*ba", "aba"));
    }

    #[test]
    fn built_in_roles_allow_what_azure_documents() {
        let reader = find_role("reader").unwrap();
        let contributor = find_role("b24988ac-6180-42a0-ab88-20f7382dd24c").unwrap();
        let owner = find_role("/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635").unwrap();
        assert!(reader.allows("Microsoft.Compute/virtualMachines/read"));
        assert!(!reader.allows("Microsoft.Compute/virtualMachines/write"));
        assert!(contributor.allows("Microsoft.Compute/virtualMachines/write"));
        assert!(!contributor.allows("Microsoft.Authorization/roleAssignments/write"));
        assert!(owner.allows("Microsoft.Authorization/roleAssignments/write"));
        assert!(find_role("Nobody").is_none());
    }

    #[test]
    fn data_actions_are_separate_from_actions() {
        let owner = find_role("Owner").unwrap();
        let secrets_user = find_role("4633458b-17de-408a-b874-0445c86b69e6").unwrap();
        let get = "Microsoft.KeyVault/vaults/secrets/getSecret/action";
        assert!(!owner.allows_data(get));
        assert!(secrets_user.allows_data(get));
        assert!(!secrets_user.allows("Microsoft.KeyVault/vaults/read"));
        let mio = find_role("Managed Identity Operator").unwrap();
        assert!(mio.allows("Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"));
        assert!(!mio.allows("Microsoft.ManagedIdentity/userAssignedIdentities/write"));
    }
}
