//! Identity limits per VM: IMDS serves up to 1000 user-assigned identities, the VM extension 32
//! (<https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>).

use crate::fakes::TestIdentity;
use crate::{token, user_identity, Sandbox};

fn uamis(n: usize) -> Vec<TestIdentity> {
    (0..n).map(|i| user_identity(&format!("u{i}"))).collect()
}

#[tokio::test]
async fn imds_serves_a_thousand_user_assigned_identities_and_refuses_the_1001st() {
    let sb = Sandbox::unlimited().await;
    let endpoint = sb.place("vm1").await;
    let ids = uamis(1001);
    let refs: Vec<&TestIdentity> = ids.iter().collect();

    let err = sb.configure_many("vm1", &refs).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("at most 1000"), "{}", err.message());

    let placed = sb.configure_many("vm1", &refs[..1000]).await.unwrap();
    assert_eq!(placed.identities.len(), 1000);
    let last = &ids[999];
    let (status, body) = token(&endpoint, &format!("&client_id={}", last.client_id)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["client_id"], last.client_id.as_str());
}

#[tokio::test]
async fn the_extension_serves_at_most_32_user_assigned_identities() {
    let sb = Sandbox::unlimited().await;
    sb.place("vm1").await;
    let ids = uamis(33);
    let refs: Vec<&TestIdentity> = ids.iter().collect();

    // Installing on a VM with 33 UAMIs fails; with 32 it works.
    sb.configure_many("vm1", &refs).await.unwrap();
    let err = sb.set_extension("vm1", 0, Some("1")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("at most 32"), "{}", err.message());
    sb.configure_many("vm1", &refs[..32]).await.unwrap();
    let placed = sb.set_extension("vm1", 0, Some("1")).await.unwrap();
    assert!(!placed.extension_endpoint.is_empty());

    // While installed, a 33rd UAMI is refused and the VM keeps its 32.
    let err = sb.configure_many("vm1", &refs).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let vm = sb
        .agent()
        .await
        .get_vm(misim_proto::imds::GetVmRequest {
            resource_id: crate::vm_id("vm1"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vm.identities.len(), 32);

    // Removing the extension lifts the limit.
    sb.set_extension("vm1", 0, None).await.unwrap();
    assert_eq!(
        sb.configure_many("vm1", &refs)
            .await
            .unwrap()
            .identities
            .len(),
        33
    );
}
