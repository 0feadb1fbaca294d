//! Property-based fuzzing of the ARM resource-ID parser (issue #15): [`ResourceId::parse`] never
//! panics, rejects with an [`IdError`] that names the input, and what it accepts round-trips.
//!
//! Cases per property: `PROPTEST_CASES` (proptest's default, 256). Long form:
//! `PROPTEST_CASES=100000 cargo test -p misim-core --test fuzz_ids --release`.

#[path = "support/fuzz.rs"]
mod fuzz;

use fuzz::mutate;
use misim_core::ids::{IdError, ResourceId};
use proptest::prelude::*;

/// Resource IDs the Azure SDKs and the CLI send, as they write them (azure-mgmt-compute's
/// `virtual_machines` operations, azure-mgmt-msi's `user_assigned_identities`, azure-mgmt-authorization
/// scopes, the CLI's `az vm identity assign --identities`, msrestazure `resource_id()`).
const SEEDS: &[&str] = &[
    "/subscriptions/00000000-0000-0000-0000-000000000001",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg1/",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1/virtualMachines/0",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/RG1/providers/microsoft.managedidentity/userassignedidentities/ID1/federatedIdentityCredentials/fic1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Web/sites/app1",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.ContainerService/managedClusters/aks1",
];

fn check(s: &str) {
    match ResourceId::parse(s) {
        Ok(id) => {
            // Accepted: the parts are non-empty and the ID parses again to the same resource.
            assert!(!id.subscription_id().is_empty(), "{s:?}");
            assert!(!id.name().is_empty(), "{s:?}");
            let again = ResourceId::parse(id.as_str()).expect("an accepted ID parses again");
            assert_eq!(again, id, "{s:?}");
            assert_eq!(again.key(), id.key());
            assert!(id.is_within(&ResourceId::subscription(id.subscription_id())));
        }
        Err(e @ IdError::Invalid { .. }) => {
            let IdError::Invalid { id, reason } = &e;
            assert_eq!(id, s);
            assert!(!reason.is_empty());
            assert!(e.to_string().starts_with("invalid resource id"));
        }
    }
}

/// Characters edits insert: separators, escapes, non-ASCII and invisible characters.
const SPECIAL: &[char] = &['/', '%', ' ', '\u{0}', 'é', '😀', '\u{200b}', 'a', 'z'];

#[test]
fn seeds_parse() {
    for s in SEEDS {
        check(s);
        assert!(ResourceId::parse(s).is_ok(), "{s}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings(s in any::<String>()) {
        check(&s);
    }

    #[test]
    fn slash_separated_words(parts in proptest::collection::vec("[A-Za-z0-9._é-]{0,6}|subscriptions|resourceGroups|providers", 0..12), lead in any::<bool>(), trail in 0usize..3) {
        let mut s = parts.join("/");
        if lead { s.insert(0, '/'); }
        s.push_str(&"/".repeat(trail));
        check(&s);
    }

    #[test]
    fn mutated_seeds(i in 0..SEEDS.len(), edits in fuzz::edits(SPECIAL, 1..6)) {
        check(&mutate(SEEDS[i], &edits));
    }
}
