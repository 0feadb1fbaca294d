//! Scale sets over fake peers: instances spread over hosts, one shared system-assigned identity,
//! scale out/in, delete; an ARM restart in the middle of an identity change converges; the legacy VM
//! extension is passed to the host.

use misim_core::Clock;
use tokio_util::sync::CancellationToken;

use crate::{FakePeers, Sandbox, T0};

fn create(name: &str, capacity: u32) -> misim_arm::CreateVmss {
    misim_arm::CreateVmss {
        resource: misim_arm::NewResource {
            resource_group: "rg".into(),
            name: name.into(),
            ..Default::default()
        },
        capacity,
        ..Default::default()
    }
}

#[tokio::test]
async fn instances_share_one_system_identity_and_follow_the_capacity() {
    let sb = Sandbox::start().await;
    let arm = &sb.arm;
    arm.create_group("", "rg", "westeurope", Default::default())
        .await
        .unwrap();
    let ss = arm.create_vmss(create("ss", 3)).await.unwrap();
    let (_, instances) = arm.list_vmss_instances("", "rg", "ss").await.unwrap();
    let names: Vec<&str> = instances.iter().map(|i| i.id.name()).collect();
    assert_eq!(names, ["0", "1", "2"]);
    let hosts: std::collections::BTreeSet<&str> =
        instances.iter().map(|i| i.host.as_str()).collect();
    assert_eq!(hosts.len(), 2, "instances spread over both hosts");
    let placed = sb.host(&instances[0].host).placed.lock().unwrap()[&instances[0].id.key()].clone();
    assert_eq!(placed.vm_scale_set_name, "ss");
    assert_eq!(placed.name, "ss_0");

    let view = arm
        .assign_identity(
            misim_arm::IdentityTarget::scale_set("", "rg", "ss"),
            true,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(view.kind(), "SystemAssigned");
    for inst in &instances {
        assert_eq!(
            sb.host(&inst.host).identities(inst.id.as_str()),
            Some(vec![ss.id.key()]),
            "every instance serves the scale set's one identity"
        );
    }
    assert_eq!(
        sb.msrp()
            .calls()
            .iter()
            .filter(|c| c.starts_with("create system"))
            .count(),
        1
    );

    arm.scale_vmss("", "rg", "ss", 1).await.unwrap();
    let (_, left) = arm.list_vmss_instances("", "rg", "ss").await.unwrap();
    assert_eq!(left.iter().map(|i| i.id.name()).collect::<Vec<_>>(), ["0"]);
    arm.scale_vmss("", "rg", "ss", 2).await.unwrap();
    let (_, grown) = arm.list_vmss_instances("", "rg", "ss").await.unwrap();
    assert_eq!(
        grown.iter().map(|i| i.id.name()).collect::<Vec<_>>(),
        ["0", "3"],
        "instance ids are not reused"
    );
    assert_eq!(
        sb.host(&grown[1].host).identities(grown[1].id.as_str()),
        Some(vec![ss.id.key()]),
        "a new instance gets the scale set's identities"
    );

    arm.delete_vmss("", "rg", "ss").await.unwrap();
    assert!(sb.msrp().identity(ss.id.as_str()).is_none());
    for inst in &grown {
        assert!(sb
            .host(&inst.host)
            .removed
            .lock()
            .unwrap()
            .contains(&inst.id.to_string()));
    }
}

#[tokio::test]
async fn restart_in_the_middle_of_an_assignment_converges() {
    let peers = FakePeers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = peers.config(dir.path(), "http://127.0.0.1:9", Clock::manual(T0));
    let token = CancellationToken::new();
    let (ss_id, uami_id) = {
        let arm = misim_arm::build(&config).unwrap();
        arm.bootstrap(&token).await.unwrap().unwrap();
        arm.create_group("", "rg", "westeurope", Default::default())
            .await
            .unwrap();
        let ss = arm.create_vmss(create("ss", 2)).await.unwrap();
        let uami = arm
            .create_user_assigned_identity("", "rg", "id1", "", Default::default())
            .await
            .unwrap();
        // MSRP goes down: the desired state is recorded, the change is pending.
        peers
            .msrp
            .fail
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let err = arm
            .assign_identity(
                misim_arm::IdentityTarget::scale_set("", "rg", "ss"),
                true,
                &[uami.id.to_string()],
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "ServiceUnavailable");
        assert!(err.to_string().contains("will be retried"), "{err}");
        (ss.id, uami.id)
    };
    // ARM restarts (new core over the same data dir) and MSRP is back.
    peers
        .msrp
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let arm = misim_arm::build(&config).unwrap();
    let view = arm.get_vmss("", "rg", "ss").unwrap().identity;
    assert_eq!(
        view.kind(),
        "SystemAssigned, UserAssigned",
        "desired state survived"
    );
    assert_eq!(arm.reconcile_all(false).await.unwrap(), 0);
    let mut want = vec![ss_id.key(), uami_id.key()];
    want.sort();
    let (_, instances) = arm.list_vmss_instances("", "rg", "ss").await.unwrap();
    for inst in &instances {
        let host = peers.hosts.iter().find(|h| h.name == inst.host).unwrap();
        assert_eq!(host.identities(inst.id.as_str()), Some(want.clone()));
    }
    let ss = arm.get_vmss("", "rg", "ss").unwrap();
    assert_eq!(ss.provisioning_state(), "Succeeded");
    assert_eq!(
        ss.identity.principal_id(),
        peers.msrp.identity(ss_id.as_str()).unwrap().principal_id
    );
}

#[tokio::test]
async fn vm_extension_is_installed_rerun_and_removed_on_the_host() {
    let sb = Sandbox::start().await;
    let arm = &sb.arm;
    arm.create_group("", "rg", "westeurope", Default::default())
        .await
        .unwrap();
    let vm = arm
        .create_vm(misim_arm::CreateVm {
            resource: misim_arm::NewResource {
                resource_group: "rg".into(),
                name: "vm".into(),
                ..Default::default()
            },
            host: "host-1".into(),
            private_ip: "10.1.2.3".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(vm.private_ip, "10.1.2.3");
    assert_eq!(
        sb.host("host-1").placed.lock().unwrap()[&vm.id.key()].private_ip_address,
        "10.1.2.3"
    );
    let set = |tag: &str| misim_arm::SetExtension {
        name: "ManagedIdentityExtensionForLinux".into(),
        publisher: "Microsoft.ManagedIdentity".into(),
        extension_type: "ManagedIdentityExtensionForLinux".into(),
        type_handler_version: "1.0".into(),
        settings_json: r#"{"port":50343}"#.into(),
        force_update_tag: tag.into(),
    };
    let (vm_after, ext) = arm.set_vm_extension("", "rg", "vm", set("")).await.unwrap();
    assert_eq!(ext.port, 50343);
    assert_eq!(vm_after.extension_endpoint, "http://127.0.0.1:50343");
    let runs = |sb: &Sandbox| sb.host("host-1").extensions.lock().unwrap()[&vm.id.key()].2;
    assert_eq!(runs(&sb), 1);
    arm.set_vm_extension("", "rg", "vm", set("")).await.unwrap();
    assert_eq!(runs(&sb), 1, "same settings and tag: nothing re-runs");
    arm.set_vm_extension("", "rg", "vm", set("t2"))
        .await
        .unwrap();
    assert_eq!(runs(&sb), 2, "a new forceUpdateTag re-runs the extension");
    let mut other = set("");
    other.publisher = "Microsoft.Azure.Extensions".into();
    other.extension_type = "CustomScript".into();
    let err = arm
        .set_vm_extension("", "rg", "vm", other)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "InvalidParameter");
    arm.delete_vm_extension("", "rg", "vm", "ManagedIdentityExtensionForLinux")
        .await
        .unwrap();
    assert!(sb.host("host-1").extensions.lock().unwrap().is_empty());
    assert!(arm.list_vm_extensions("", "rg", "vm").unwrap().is_empty());
    assert_eq!(
        arm.get_vm("", "rg", "vm").await.unwrap().extension_endpoint,
        ""
    );
}
