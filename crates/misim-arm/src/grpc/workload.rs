//! gRPC adapter of AKS workload identity ([`crate::identity::workload`]): federated identity credentials,
//! managed clusters and projected service-account tokens.

use misim_proto::arm as pb;
use tonic::{Request, Response};

use super::convert::all;
use super::{ArmGrpc, R};
use crate::identity::workload::{FederatedCredential, ManagedCluster, TokenRequest};

fn fic_pb(f: FederatedCredential) -> pb::FederatedIdentityCredential {
    pb::FederatedIdentityCredential {
        resource_json: f.to_json().to_string(),
        id: f.id.as_str().to_string(),
        name: f.name().to_string(),
        issuer: f.issuer,
        subject: f.subject,
        audiences: f.audiences,
    }
}

fn cluster_pb(c: ManagedCluster) -> pb::ManagedCluster {
    pb::ManagedCluster {
        resource_json: c.to_json().to_string(),
        id: c.id.as_str().to_string(),
        name: c.id.name().to_string(),
        location: c.location,
        issuer_url: c.issuer_url,
    }
}

impl ArmGrpc {
    pub(super) async fn wl_create_fic(
        &self,
        r: Request<pb::CreateFederatedIdentityCredentialRequest>,
    ) -> R<pb::FederatedIdentityCredential> {
        let r = r.into_inner();
        let f = self
            .arm
            .create_federated_credential(
                &r.subscription_id,
                &r.resource_group,
                &r.identity_name,
                &r.name,
                &r.issuer,
                &r.subject,
                r.audiences,
            )
            .await?;
        Ok(Response::new(fic_pb(f)))
    }

    pub(super) async fn wl_list_fics(
        &self,
        r: Request<pb::ListFederatedIdentityCredentialsRequest>,
    ) -> R<pb::ListFederatedIdentityCredentialsResponse> {
        let r = r.into_inner();
        let credentials = all(
            self.arm.list_federated_credentials(
                &r.subscription_id,
                &r.resource_group,
                &r.identity_name,
            )?,
            fic_pb,
        );
        Ok(Response::new(
            pb::ListFederatedIdentityCredentialsResponse { credentials },
        ))
    }

    pub(super) async fn wl_delete_fic(
        &self,
        r: Request<pb::DeleteFederatedIdentityCredentialRequest>,
    ) -> R<pb::DeleteFederatedIdentityCredentialResponse> {
        let r = r.into_inner();
        self.arm
            .delete_federated_credential(
                &r.subscription_id,
                &r.resource_group,
                &r.identity_name,
                &r.name,
            )
            .await?;
        Ok(Response::new(
            pb::DeleteFederatedIdentityCredentialResponse {},
        ))
    }

    pub(super) async fn wl_create_cluster(
        &self,
        r: Request<pb::CreateManagedClusterRequest>,
    ) -> R<pb::ManagedCluster> {
        let r = r.into_inner();
        let c = self
            .arm
            .create_managed_cluster(&r.subscription_id, &r.resource_group, &r.name, &r.location)
            .await?;
        Ok(Response::new(cluster_pb(c)))
    }

    pub(super) async fn wl_get_cluster(
        &self,
        r: Request<pb::GetManagedClusterRequest>,
    ) -> R<pb::ManagedCluster> {
        let r = r.into_inner();
        let c = self
            .arm
            .get_managed_cluster(&r.subscription_id, &r.resource_group, &r.name)?;
        Ok(Response::new(cluster_pb(c)))
    }

    pub(super) async fn wl_delete_cluster(
        &self,
        r: Request<pb::DeleteManagedClusterRequest>,
    ) -> R<pb::DeleteManagedClusterResponse> {
        let r = r.into_inner();
        self.arm
            .delete_managed_cluster(&r.subscription_id, &r.resource_group, &r.name)
            .await?;
        Ok(Response::new(pb::DeleteManagedClusterResponse {}))
    }

    pub(super) async fn wl_sa_token(
        &self,
        r: Request<pb::CreateServiceAccountTokenRequest>,
    ) -> R<pb::ServiceAccountToken> {
        let r = r.into_inner();
        let req = TokenRequest {
            namespace: r.namespace,
            service_account: r.service_account,
            audiences: r.audiences,
            expiration_seconds: r.expiration_seconds,
            pod_name: r.pod_name,
        };
        let t = self.arm.service_account_token(
            &r.subscription_id,
            &r.resource_group,
            &r.cluster_name,
            &req,
        )?;
        Ok(Response::new(pb::ServiceAccountToken {
            token: t.token,
            expiration_timestamp: t.expires_on,
            issuer: t.issuer,
        }))
    }
}
