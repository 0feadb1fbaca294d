//! Property-based fuzzing of the ARM resource-ID parser (issue #15): [`ResourceId::parse`] never
//! panics, rejects with an [`IdError`] that names the input, and what it accepts round-trips.
//!
//! Cases per property: `PROPTEST_CASES` (proptest's default, 256). Long form:
//! `PROPTEST_CASES=100000 cargo test -p misim-core --test fuzz_ids --release`.

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

/// One edit of a seed: insert, delete or replace a character at a position (chars, not bytes).
fn mutate(seed: &str, edits: &[(usize, u8, char)]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for (pos, op, c) in edits {
        let at = if chars.is_empty() {
            0
        } else {
            pos % (chars.len() + 1)
        };
        match op % 3 {
            0 => chars.insert(at, *c),
            1 if at < chars.len() => {
                chars.remove(at);
            }
            _ if at < chars.len() => chars[at] = *c,
            _ => chars.push(*c),
        }
    }
    chars.into_iter().collect()
}

fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        Just('/'),
        Just('%'),
        Just(' '),
        Just('\u{0}'),
        Just('é'),
        Just('😀'),
        Just('\u{200b}'),
        any::<char>(),
        proptest::char::range('a', 'z'),
    ]
}

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
    fn mutated_seeds(i in 0..SEEDS.len(), edits in proptest::collection::vec((any::<usize>(), any::<u8>(), interesting_char()), 1..6)) {
        check(&mutate(SEEDS[i], &edits));
    }
}
