//! Request recording (misim_core::events) over the wire: every request of the seven-step flow is
//! recorded with its party, caller, operation, redacted parameters, outcome and the flow's trace
//! ID; `Events` on ARM's API lists and streams them; on a control port only the admin role may.

use misim_core::control::Role;
use misim_proto::events::events_client::EventsClient;
use misim_proto::events::{EventFilter, ListEventsRequest, WatchEventsRequest};
use misim_proto::tonic::Code;
use misim_tests::{channel_as, Sandbox};

use crate::lifecycle_common::{enable_system, group, vm};

fn filter(party: &str, vm: &str, operation: &str) -> Option<EventFilter> {
    Some(EventFilter {
        party: party.into(),
        vm: vm.into(),
        operation: operation.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seven_steps_are_recorded_with_callers_redacted_parameters_and_one_trace() {
    let sb = Sandbox::start_with_hosts(1).await;
    group(&sb, "rg-ev").await;
    vm(&sb, "rg-ev", "vm-ev", "host-1").await;
    enable_system(&sb, "rg-ev", "vm-ev").await;
    let v = sb
        .arm()
        .await
        .get_vm(misim_proto::arm::GetVmRequest {
            resource_group: "rg-ev".into(),
            name: "vm-ev".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let mut events = EventsClient::connect(sb.endpoints.arm_grpc.clone())
        .await
        .unwrap();
    // Watch from now: the token request's events arrive as they are recorded.
    let mut watch = events
        .watch(WatchEventsRequest {
            filter: filter("", "", "oauth2/token"),
            from_start: false,
        })
        .await
        .unwrap()
        .into_inner();
    let (status, _) = sb
        .imds_token(&v.imds_endpoint, "https://management.azure.com/", &[])
        .await;
    assert_eq!(status, 200);
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
        .await
        .expect("a watched event")
        .unwrap()
        .expect("the stream is open");
    assert!(first.operation.contains("oauth2/token"), "{first:?}");
    drop(watch);

    let list = |f| {
        let mut c = events.clone();
        async move {
            c.list(ListEventsRequest { filter: f })
                .await
                .unwrap()
                .into_inner()
                .events
        }
    };
    let imds = list(filter("imds", "vm-ev", "/metadata/identity/oauth2/token")).await;
    assert_eq!(imds.len(), 1, "{imds:#?}");
    let imds = &imds[0];
    assert_eq!(imds.outcome, "200");
    assert_eq!(imds.params["resource"], "https://management.azure.com/");
    assert!(imds.caller.starts_with("127.0.0.1:"), "{imds:?}");
    assert_eq!(imds.trace_id.len(), 32, "{imds:?}");
    assert!(imds.sim_time > 1_600_000_000 && imds.wall_time_ms > 0);

    // Step 6: Azure AD's token endpoint, in the same flow, the assertion redacted.
    let aad = list(Some(EventFilter {
        party: "aad".into(),
        trace_id: imds.trace_id.clone(),
        ..Default::default()
    }))
    .await;
    let token = aad
        .iter()
        .find(|e| e.operation.starts_with("POST ") && e.operation.ends_with("/oauth2/token"))
        .unwrap_or_else(|| panic!("no Azure AD token request in the flow: {aad:#?}"));
    assert_eq!(token.params["client_assertion"], "[redacted]");
    assert_eq!(token.params["grant_type"], "client_credentials");
    assert_eq!(token.outcome, "200");

    // Steps 1-3: ARM's calls to MSRP and the host, each with the caller's role.
    let msrp = list(filter("msrp", "", "/misim.msrp.v1.Msrp/CreateIdentity")).await;
    assert!(
        msrp.iter().any(|e| e.caller == "arm" && e.outcome == "OK"),
        "{msrp:#?}"
    );
    let creds = list(filter("msrp", "", "GetCredential")).await;
    assert!(
        creds.iter().any(|e| e.caller == "host:host-1"),
        "{creds:#?}"
    );

    // On a control port the recorded requests are the admin's: a host's certificate is refused.
    let dir = sb.dir.path().to_path_buf();
    let mut as_host = EventsClient::new(
        channel_as(&dir, Role::Host("host-1".into()), &sb.endpoints.msrp_grpc).await,
    );
    let s = as_host
        .list(ListEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let mut as_admin = EventsClient::new(sb.admin(&sb.endpoints.msrp_grpc).await);
    let all = as_admin
        .list(ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.capacity > 0 && !all.events.is_empty());
    sb.stop().await;
}
