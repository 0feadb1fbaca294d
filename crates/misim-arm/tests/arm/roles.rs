//! Role assignments over gRPC (step 4): create, list with inheritance, authorize, delete.

use misim_proto::arm as pb;

use crate::flow::{group, vm};
use crate::Sandbox;

#[tokio::test]
async fn role_assignments_are_created_listed_with_inheritance_and_deleted() {
    let mut sb = Sandbox::start().await;
    let g = group(&mut sb, "rg").await;
    let v = vm(&mut sb, "rg", "vm").await;
    let principal = uuid::Uuid::new_v4().to_string();
    let create = |scope: &str, role: &str| pb::CreateRoleAssignmentRequest {
        scope: scope.into(),
        role: role.into(),
        principal_id: principal.clone(),
        principal_type: String::new(),
    };
    let ra = sb
        .client
        .create_role_assignment(create(&g.id, "Reader"))
        .await
        .unwrap()
        .into_inner();
    assert!(ra.id.starts_with(&format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/",
        g.id
    )));
    assert_eq!(ra.role_definition_name, "Reader");
    assert!(ra
        .role_definition_id
        .ends_with("/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"));
    assert_eq!(ra.principal_type, "ServicePrincipal");
    let same = sb
        .client
        .create_role_assignment(create(&g.id, "acdd72a7-3385-48ef-bd42-f606fba81ae7"))
        .await
        .unwrap();
    assert_eq!(
        same.into_inner().id,
        ra.id,
        "same principal, role and scope returns the existing assignment"
    );

    let list = |scope: &str, p: &str| pb::ListRoleAssignmentsRequest {
        scope: scope.into(),
        principal_id: p.into(),
    };
    let at_vm = sb
        .client
        .list_role_assignments(list(&v.id, ""))
        .await
        .unwrap()
        .into_inner()
        .role_assignments;
    assert_eq!(at_vm, vec![ra.clone()], "inherited from the group");
    let at_sub = sb
        .client
        .list_role_assignments(list("", ""))
        .await
        .unwrap()
        .into_inner()
        .role_assignments;
    assert!(
        at_sub.is_empty(),
        "a group assignment does not apply at the subscription"
    );
    let other = sb
        .client
        .list_role_assignments(list(&v.id, &uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap();
    assert!(other.into_inner().role_assignments.is_empty());

    let vm_id = misim_core::ResourceId::parse(&v.id).unwrap();
    assert!(sb
        .arm
        .authorize(&principal, "Microsoft.Compute/virtualMachines/read", &vm_id)
        .unwrap());
    assert!(!sb
        .arm
        .authorize(
            &principal,
            "Microsoft.Compute/virtualMachines/write",
            &vm_id
        )
        .unwrap());
    let sub_id =
        misim_core::ResourceId::parse(&format!("/subscriptions/{}", v.subscription_id)).unwrap();
    assert!(!sb
        .arm
        .authorize(
            &principal,
            "Microsoft.Resources/subscriptions/read",
            &sub_id
        )
        .unwrap());

    let bad_role = sb
        .client
        .create_role_assignment(create(&g.id, "Janitor"))
        .await
        .unwrap_err();
    assert_eq!(bad_role.code(), tonic::Code::NotFound);
    let missing_scope = format!("/subscriptions/{}/resourceGroups/nope", v.subscription_id);
    let bad_scope = sb
        .client
        .create_role_assignment(create(&missing_scope, "Reader"))
        .await
        .unwrap_err();
    assert!(
        bad_scope.message().contains("ResourceGroupNotFound"),
        "{}",
        bad_scope.message()
    );

    sb.client
        .delete_role_assignment(pb::DeleteRoleAssignmentRequest { id: ra.id.clone() })
        .await
        .unwrap();
    let after = sb
        .client
        .list_role_assignments(list(&v.id, ""))
        .await
        .unwrap()
        .into_inner()
        .role_assignments;
    assert!(after.is_empty());
    assert!(!sb
        .arm
        .authorize(&principal, "Microsoft.Compute/virtualMachines/read", &vm_id)
        .unwrap());

    let defs = sb
        .client
        .list_role_definitions(pb::ListRoleDefinitionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = defs
        .role_definitions
        .iter()
        .map(|d| d.role_name.as_str())
        .collect();
    for expected in [
        "Owner",
        "Contributor",
        "Reader",
        "User Access Administrator",
        "Managed Identity Operator",
        "Key Vault Secrets User",
        "Storage Blob Data Reader",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
}
