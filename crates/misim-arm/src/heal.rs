//! Cross-party consistency: compares ARM's desired state with what MSRP and every host hold, reports
//! each difference ([`Arm::consistency`], served as `GET /readyz` and `misim doctor`) and repairs what
//! it can ([`Arm::heal`], run by the reconcile loop):
//!
//! - an identity ARM recorded that MSRP lost (its store was truncated or moved aside): ARM forgets
//!   the ids and the reconciler creates the identity again, with a new service principal and so a
//!   new principal ID, as Azure gives a re-created identity
//!   (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/managed-identities-faq>);
//!   the VMs that use it are configured again;
//! - a VM, scale-set instance or web app (`Microsoft.Web/sites`) ARM placed that its host lost:
//!   placed again and configured (a web app keeps its secret; its host opens a new endpoint);
//! - a tenant a subscription trusts that Azure AD lost (its store was moved aside): created again
//!   with the same ID, so the identities of the subscription can be created again in it;
//! - an MSRP identity whose resource ARM does not have (an orphan): deleted, which deletes its
//!   service principal and key credentials in Azure AD;
//! - a VM or web app on a host that ARM does not have: removed from the host.

use std::collections::{BTreeMap, BTreeSet};

use misim_core::ResourceId;
use misim_proto::{imds, msrp};
use tracing::warn;

use crate::error::Result;
use crate::identity::Holder;
use crate::model::{SyncState, UserAssignedEntry, Vm, Vmss, WebApp};
use crate::service::Arm;
use crate::store::Stored;

/// One difference between ARM's desired state and a peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// The party that differs (`msrp`, `host:NAME`).
    pub party: String,
    /// What kind of difference (`missing-tenant`, `missing-host`, `missing-identity`,
    /// `missing-principal`, `missing-credential`,
    /// `missing-vm` (a VM, instance or web app), `orphaned-identity`, `orphaned-vm`, `reconciling`,
    /// `unreachable`).
    pub kind: String,
    /// The resource concerned.
    pub resource: String,
    /// A sentence for people.
    pub detail: String,
    /// Whether the reconciler repairs it on its own (`false`: someone must act).
    pub converging: bool,
}

/// The result of a consistency check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Consistency {
    /// True when no difference was found.
    pub consistent: bool,
    /// Every difference.
    pub differences: Vec<Difference>,
}

/// A record's key, its user-assigned identities and its reconcile state ([`Arm::mark_users_in`]).
type RecordParts<T> = fn(&mut T) -> (String, &BTreeMap<String, UserAssignedEntry>, &mut SyncState);

fn diff(party: &str, kind: &str, resource: &str, detail: String, converging: bool) -> Difference {
    Difference {
        party: party.into(),
        kind: kind.into(),
        resource: resource.into(),
        detail,
        converging,
    }
}

impl Arm {
    /// MSRP's identities by lower-cased resource ID, or the difference saying MSRP is unreachable.
    async fn msrp_identities(
        &self,
    ) -> std::result::Result<BTreeMap<String, msrp::Identity>, Difference> {
        self.peers
            .list_identities()
            .await
            .map(|ids| {
                ids.into_iter()
                    .map(|i| (i.resource_id.to_ascii_lowercase(), i))
                    .collect()
            })
            .map_err(|e| diff("msrp", "unreachable", "", e.to_string(), true))
    }

    /// Every difference between ARM's desired state and MSRP and the hosts; nothing is changed.
    ///
    /// # Errors
    /// ARM's own store failures.
    pub async fn consistency(&self) -> Result<Consistency> {
        let mut out = Vec::new();
        // Peers first, ARM's own state after: a resource ARM adds meanwhile is then never taken
        // for an orphan (a false "missing" only repeats an idempotent step).
        let msrp = self.msrp_identities().await;
        let tenants = self.aad_tenants().await;
        let aad = match (&msrp, &tenants) {
            (Ok(m), Ok(t)) => Some(self.aad_principals(m, t).await),
            _ => None,
        };
        let mut hosts = Vec::new();
        for host in self.peers.host_names() {
            let listed = self.peers.list_vms(&host).await;
            hosts.push((host, listed));
        }
        let exists = self.resource_keys()?;
        match &tenants {
            Err(d) => out.push(d.clone()),
            Ok(known) => {
                for sub in self.store.subscriptions.values()? {
                    if !known.contains(&sub.tenant_id.to_ascii_lowercase()) {
                        out.push(diff(
                            "aad",
                            "missing-tenant",
                            &sub.tenant_id,
                            format!("Azure AD has no tenant {} (subscription {} trusts it); the reconciler creates it again with the same ID", sub.tenant_id, sub.subscription_id),
                            true,
                        ));
                    }
                }
            }
        }
        match msrp {
            Err(d) => out.push(d),
            Ok(msrp) => {
                for (key, res, ids) in self.recorded_identities()? {
                    match msrp.get(&key) {
                        None => out.push(diff(
                            "msrp",
                            "missing-identity",
                            &res,
                            format!("MSRP has no identity for {res} (ARM recorded principal {ids}); the reconciler creates it again"),
                            true,
                        )),
                        Some(i) if !i.principal_id.eq_ignore_ascii_case(&ids) => out.push(diff(
                            "msrp",
                            "missing-identity",
                            &res,
                            format!("MSRP's identity for {res} has principal {}, ARM recorded {ids}", i.principal_id),
                            true,
                        )),
                        Some(_) => {}
                    }
                }
                match aad {
                    Some(Ok(aad)) => {
                        let known = tenants.as_ref().ok();
                        for (key, i) in &msrp {
                            if !exists.contains(key.as_str()) || i.principal_id.is_empty() {
                                continue;
                            }
                            // An identity of a lost tenant is a missing-tenant difference first.
                            if known.is_some_and(|t| !t.contains(&i.tenant_id.to_ascii_lowercase()))
                            {
                                continue;
                            }
                            match aad.get(&i.principal_id.to_ascii_lowercase()) {
                                None => out.push(diff(
                                    "aad",
                                    "missing-principal",
                                    &i.resource_id,
                                    format!("Azure AD has no service principal {} for {}; the reconciler creates the identity again (a new principal ID, as Azure gives a re-created identity)", i.principal_id, i.resource_id),
                                    true,
                                )),
                                Some(thumbs) if !thumbs.contains(&i.thumbprint_sha1_hex.to_ascii_uppercase()) => out.push(diff(
                                    "aad",
                                    "missing-credential",
                                    &i.resource_id,
                                    format!("service principal {} of {} has no key credential for MSRP's certificate {}; the reconciler creates the identity again", i.principal_id, i.resource_id, i.thumbprint_sha1_hex),
                                    true,
                                )),
                                Some(_) => {}
                            }
                        }
                    }
                    Some(Err(d)) => out.push(d),
                    None => {}
                }
                for (key, i) in &msrp {
                    if !exists.contains(key.as_str()) {
                        out.push(diff(
                            "msrp",
                            "orphaned-identity",
                            &i.resource_id,
                            format!("MSRP (and Azure AD: principal {}) hold an identity for {} that ARM does not have; the reconciler deletes it", i.principal_id, i.resource_id),
                            true,
                        ));
                    }
                }
            }
        }
        // ARM's own unfinished work: the system has not settled while any resource is dirty.
        for (res, state) in self.dirty_resources()? {
            out.push(diff(
                "arm",
                "reconciling",
                &res,
                format!("ARM is still carrying {res} to MSRP and its host ({state})"),
                true,
            ));
        }
        let placed = self.placed_vms()?;
        // Placed on a host this system does not run (started with fewer hosts): no reconcile
        // reaches it, someone must start misim with that host again.
        let running: BTreeSet<&str> = hosts.iter().map(|(h, _)| h.as_str()).collect();
        for (h, res, _) in placed.values() {
            if !running.contains(h.as_str()) {
                out.push(diff(
                    &format!("host:{h}"),
                    "missing-host",
                    res,
                    format!("{res} is placed on host {h}, which this system does not run; start misim with that host (misim up --hosts) or delete the resource"),
                    false,
                ));
            }
        }
        for (host, listed) in hosts {
            let party = format!("host:{host}");
            let on_host = match listed {
                Ok(v) => v,
                Err(e) => {
                    out.push(diff(&party, "unreachable", "", e.to_string(), true));
                    continue;
                }
            };
            let on_host: BTreeMap<String, String> = on_host
                .into_iter()
                .map(|(id, endpoint)| (id.to_ascii_lowercase(), endpoint))
                .collect();
            for (key, (h, res, recorded)) in &placed {
                if h != &host {
                    continue;
                }
                match on_host.get(key) {
                    None => out.push(diff(
                        &party,
                        "missing-vm",
                        res,
                        format!("{host} lost {res}; the reconciler places and configures it again"),
                        true,
                    )),
                    // A host restarted while its VM's port was taken binds a new one: ARM's record
                    // (what `vm list` shows) must follow the endpoint the host really serves.
                    Some(served)
                        if !recorded.is_empty() && !served.is_empty() && served != recorded =>
                    {
                        out.push(diff(
                            &party,
                            "stale-endpoint",
                            res,
                            format!("{host} serves {res} on {served}, ARM recorded {recorded}; the reconciler records the host's endpoint"),
                            true,
                        ))
                    }
                    Some(_) => {}
                }
            }
            for key in on_host.keys() {
                if !exists.contains(key.as_str()) {
                    out.push(diff(&party, "orphaned-vm", key, format!("{host} serves {key}, which ARM does not have; the reconciler removes it"), true));
                }
            }
        }
        Ok(Consistency {
            consistent: out.is_empty(),
            differences: out,
        })
    }

    /// Repairs what [`Arm::consistency`] finds: marks resources for the reconciler and deletes
    /// orphans. Returns the differences found.
    ///
    /// # Errors
    /// ARM's own store failures.
    pub async fn heal(&self) -> Result<Vec<Difference>> {
        let mut found = self.consistency().await?.differences;
        // Azure AD differences lead to deleting and re-creating an identity: act only on ones a
        // second look confirms (a certificate renewal between the two listings is not a loss).
        if found
            .iter()
            .any(|d| d.party == "aad" && d.kind != "unreachable")
        {
            let again = self.consistency().await?.differences;
            found.retain(|d| d.party != "aad" || again.contains(d));
        }
        // A difference that does not converge needs someone to act; the report names it.
        for d in found.iter().filter(|d| d.converging) {
            let result = self.heal_one(d).await;
            if let Err(e) = result {
                warn!(party = %d.party, resource = %d.resource, error = %e, "healing failed; will retry");
            } else if d.kind != "unreachable" {
                warn!(party = %d.party, kind = %d.kind, resource = %d.resource, "healing: {}", d.detail);
            }
        }
        Ok(found)
    }

    async fn heal_one(&self, d: &Difference) -> Result<()> {
        if d.kind == "missing-tenant" {
            self.peers.create_tenant(&d.resource).await?;
            crate::reconcile::retry_soon();
            return Ok(());
        }
        let Ok(id) = ResourceId::parse(&d.resource) else {
            return Ok(());
        };
        match d.kind.as_str() {
            "missing-principal" | "missing-credential" => {
                // MSRP's record points at what Azure AD lost: drop it (Azure AD's leftovers with it),
                // then the identity is created again as a missing one.
                self.peers.delete_identity(id.as_str()).await?;
                let again = Difference {
                    kind: "missing-identity".into(),
                    ..d.clone()
                };
                return Box::pin(self.heal_one(&again)).await;
            }
            "missing-identity" => {
                let _g = self.locks.lock(&id.key()).await;
                let why = SyncState::Failed(format!("healing: {}", d.detail));
                if let Some(mut vm) = self.store.vm(&id)? {
                    vm.identity.system_identity = None;
                    vm.sync = why;
                    self.store.vms.put(&id.key(), &vm)?;
                } else if let Some(mut u) = self.store.uami(&id)? {
                    u.identity = None;
                    u.sync = why.clone();
                    self.store.uamis.put(&id.key(), &u)?;
                    drop(_g);
                    self.mark_users_dirty(&id, &why).await?;
                } else if let Some(mut ss) = self.store.vmss.get(&id.key())? {
                    ss.identity.system_identity = None;
                    ss.sync = why;
                    self.store.vmss.put(&id.key(), &ss)?;
                } else if let Some(mut site) = self.store.sites.get(&id.key())? {
                    site.identity.system_identity = None;
                    site.sync = why;
                    self.store.sites.put(&id.key(), &site)?;
                }
            }
            // Placing again is idempotent and records the endpoint the host answers with.
            "missing-vm" | "stale-endpoint" => {
                let why = SyncState::Failed(format!("healing: {}", d.detail));
                if let Some(mut vm) = self.store.vm(&id)? {
                    let _g = self.locks.lock(&id.key()).await;
                    vm.placed = false;
                    vm.sync = why;
                    self.store.vms.put(&id.key(), &vm)?;
                } else if let Some(mut site) = self.store.sites.get(&id.key())? {
                    let _g = self.locks.lock(&id.key()).await;
                    site.placed = false;
                    site.sync = why;
                    self.store.sites.put(&id.key(), &site)?;
                } else if let Some(mut inst) = self.store.instances.get(&id.key())? {
                    inst.placed = false;
                    inst.sync = why.clone();
                    self.store.instances.put(&id.key(), &inst)?;
                    if let Some(ss_id) = &inst.scale_set {
                        let _g = self.locks.lock(&ss_id.key()).await;
                        if let Some(mut ss) = self.store.vmss.get(&ss_id.key())? {
                            ss.sync = why;
                            self.store.vmss.put(&ss_id.key(), &ss)?;
                        }
                    }
                }
            }
            "orphaned-identity" => self.peers.delete_identity(id.as_str()).await?,
            "orphaned-vm" => {
                let host = d.party.trim_start_matches("host:");
                self.peers.remove_vm(host, id.as_str()).await?;
            }
            _ => {}
        }
        self.store.flush().await?;
        crate::reconcile::retry_soon();
        Ok(())
    }

    /// Azure AD's tenants (lower-cased IDs), or the difference saying Azure AD is unreachable.
    async fn aad_tenants(&self) -> std::result::Result<BTreeSet<String>, Difference> {
        self.peers
            .list_tenants()
            .await
            .map(|ts| ts.into_iter().map(|t| t.to_ascii_lowercase()).collect())
            .map_err(|e| diff("aad", "unreachable", "", e.to_string(), true))
    }

    /// Azure AD's service principals of the tenants of MSRP's identities that Azure AD has
    /// (`known`): lower-cased object ID → upper-case thumbprints of its key credentials.
    async fn aad_principals(
        &self,
        msrp: &BTreeMap<String, msrp::Identity>,
        known: &BTreeSet<String>,
    ) -> std::result::Result<BTreeMap<String, BTreeSet<String>>, Difference> {
        let tenants: BTreeSet<String> = msrp
            .values()
            .map(|i| i.tenant_id.to_ascii_lowercase())
            .filter(|t| known.contains(t))
            .collect();
        let mut out = BTreeMap::new();
        for t in tenants.iter().map(String::as_str) {
            let sps = self
                .peers
                .list_service_principals(t)
                .await
                .map_err(|e| diff("aad", "unreachable", "", e.to_string(), true))?;
            for sp in sps {
                out.insert(
                    sp.object_id.to_ascii_lowercase(),
                    sp.key_credentials
                        .iter()
                        .map(|k| k.thumbprint_sha1_hex.to_ascii_uppercase())
                        .collect(),
                );
            }
        }
        Ok(out)
    }

    /// Marks every VM, scale set and web app that has user-assigned identity `uami` for
    /// reconfiguration.
    async fn mark_users_dirty(&self, uami: &ResourceId, why: &SyncState) -> Result<()> {
        let key = uami.key();
        let s = &self.store;
        self.mark_users_in(&s.vms, &key, why, |v| {
            (v.id.key(), &v.identity.user_assigned, &mut v.sync)
        })
        .await?;
        self.mark_users_in(&s.vmss, &key, why, |v| {
            (v.id.key(), &v.identity.user_assigned, &mut v.sync)
        })
        .await?;
        self.mark_users_in(&s.sites, &key, why, |v| {
            (v.id.key(), &v.identity.user_assigned, &mut v.sync)
        })
        .await
    }

    /// Sets the reconcile state of every record of `table` whose user-assigned identities include
    /// `uami_key` to `why`, each under its lock; `parts` gives a record's key, identities and state.
    async fn mark_users_in<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        table: &misim_core::Table<T>,
        uami_key: &str,
        why: &SyncState,
        parts: RecordParts<T>,
    ) -> Result<()> {
        for mut r in table.values()? {
            let (key, users, _) = parts(&mut r);
            if users.values().any(|e| e.id.key() == uami_key) {
                let _g = self.locks.lock(&key).await;
                *parts(&mut r).2 = why.clone();
                table.put(&key, &r)?;
            }
        }
        Ok(())
    }

    /// Keys of every resource ARM has that can own an identity or be placed on a host.
    fn resource_keys(&self) -> Result<BTreeSet<String>> {
        let mut keys = BTreeSet::new();
        for v in self.store.vms.values()? {
            keys.insert(v.id.key());
        }
        for v in self.store.instances.values()? {
            keys.insert(v.id.key());
        }
        for u in self.store.uamis.values()? {
            keys.insert(u.id.key());
        }
        for s in self.store.vmss.values()? {
            keys.insert(s.id.key());
        }
        for (k, _) in self.store.sites.scan_prefix("")? {
            keys.insert(k);
        }
        Ok(keys)
    }

    /// `(key, resource id, principal id)` of every identity ARM recorded as created (resources not
    /// being deleted).
    fn recorded_identities(&self) -> Result<Vec<(String, String, String)>> {
        let mut out = self.system_identities::<Vm>()?;
        for u in self
            .store
            .uamis
            .values()?
            .into_iter()
            .filter(|u| !u.deleting)
        {
            if let Some(ids) = &u.identity {
                out.push((u.id.key(), u.id.to_string(), ids.principal_id.clone()));
            }
        }
        out.extend(self.system_identities::<Vmss>()?);
        out.extend(self.system_identities::<WebApp>()?);
        Ok(out)
    }

    /// `(key, resource id, principal id)` of the system-assigned identity of every `R` (VM, scale
    /// set, web app) not being deleted whose identity ARM recorded as created.
    fn system_identities<R: Holder>(&self) -> Result<Vec<(String, String, String)>> {
        Ok(R::table(&self.store)
            .values()?
            .into_iter()
            .filter(|r| !r.deleting())
            .filter_map(|r| {
                let block = r.identity();
                let ids = block
                    .system_identity
                    .as_ref()
                    .filter(|_| block.system_assigned)?;
                Some((r.id().key(), r.id().to_string(), ids.principal_id.clone()))
            })
            .collect())
    }

    /// Resources whose desired state the reconciler has not carried out yet, with their state.
    fn dirty_resources(&self) -> Result<Vec<(String, String)>> {
        /// `(resource id, state)` of each of `records` the reconciler still has to carry out.
        fn dirty<R: Stored>(records: Vec<R>, out: &mut Vec<(String, String)>) {
            for mut r in records {
                if !r.sync_mut().is_dirty() {
                    continue;
                }
                let id = r.id().to_string();
                let state = match r.sync_mut() {
                    SyncState::Pending => "pending".to_string(),
                    SyncState::Succeeded => "succeeded".to_string(),
                    SyncState::Failed(m) => format!("retrying: {m}"),
                };
                out.push((id, state));
            }
        }
        let mut out = Vec::new();
        dirty(self.store.vms.values()?, &mut out);
        dirty(self.store.instances.values()?, &mut out);
        dirty(self.store.uamis.values()?, &mut out);
        dirty(self.store.vmss.values()?, &mut out);
        dirty(self.store.sites.values()?, &mut out);
        Ok(out)
    }

    /// VMs, instances and web apps ARM placed (not being deleted): key → (host, resource id).
    fn placed_vms(&self) -> Result<BTreeMap<String, (String, String, String)>> {
        let mut out = BTreeMap::new();
        for v in self
            .store
            .vms
            .values()?
            .into_iter()
            .chain(self.store.instances.values()?)
            .filter(|v| v.placed && !v.deleting)
        {
            out.insert(
                v.id.key(),
                (v.host.clone(), v.id.to_string(), v.imds_endpoint.clone()),
            );
        }
        for s in self
            .store
            .sites
            .values()?
            .into_iter()
            .filter(|s| s.placed && !s.deleting)
        {
            out.insert(
                s.id.key(),
                (s.host.clone(), s.id.to_string(), String::new()),
            );
        }
        Ok(out)
    }
}

/// `GET /readyz` on ARM's REST listener (loopback callers or API-token holders, as the console):
/// `200` with `{"consistent":true,"differences":[]}` when ARM, MSRP and every host agree, `503`
/// with the differences otherwise (the convention of Kubernetes readiness endpoints,
/// <https://kubernetes.io/docs/reference/using-api/health-checks/>).
pub async fn readyz(
    axum::extract::State(arm): axum::extract::State<std::sync::Arc<Arm>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match arm.consistency().await {
        Ok(c) if c.consistent => (axum::http::StatusCode::OK, axum::Json(c)).into_response(),
        Ok(c) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(c)).into_response(),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"consistent": false, "error": e.to_string()})),
        )
            .into_response(),
    }
}

impl crate::clients::Peers {
    /// MSRP `ListIdentities`.
    ///
    /// # Errors
    /// [`crate::error::ArmError::Unavailable`] when MSRP cannot be reached.
    pub async fn list_identities(&self) -> Result<Vec<msrp::Identity>> {
        self.msrp_client()
            .list_identities(msrp::ListIdentitiesRequest {})
            .await
            .map(|r| r.into_inner().identities)
            .map_err(|s| crate::error::ArmError::Unavailable(format!("msrp: {}", s.message())))
    }

    /// Azure AD `ListTenants`: every tenant's ID.
    ///
    /// # Errors
    /// [`crate::error::ArmError::Unavailable`] when Azure AD cannot be reached.
    pub async fn list_tenants(&self) -> Result<Vec<String>> {
        self.aad_client()
            .list_tenants(misim_proto::aad::ListTenantsRequest {})
            .await
            .map(|r| {
                r.into_inner()
                    .tenants
                    .into_iter()
                    .map(|t| t.tenant_id)
                    .collect()
            })
            .map_err(|s| crate::error::ArmError::Unavailable(format!("azure ad: {}", s.message())))
    }

    /// Azure AD `CreateTenant` with the given ID (idempotent: an existing tenant is kept), named as
    /// Azure AD names its default directory.
    ///
    /// # Errors
    /// [`crate::error::ArmError::Unavailable`] when Azure AD cannot be reached or refuses.
    pub async fn create_tenant(&self, tenant_id: &str) -> Result<()> {
        self.aad_client()
            .create_tenant(misim_proto::aad::CreateTenantRequest {
                display_name: "misim default directory".into(),
                tenant_id: tenant_id.to_string(),
            })
            .await
            .map(|_| ())
            .map_err(|s| crate::error::ArmError::Unavailable(format!("azure ad: {}", s.message())))
    }

    /// Azure AD `ListServicePrincipals` of `tenant_id`.
    ///
    /// # Errors
    /// [`crate::error::ArmError::Unavailable`] when Azure AD cannot be reached.
    pub async fn list_service_principals(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<misim_proto::aad::ServicePrincipal>> {
        self.aad_client()
            .list_service_principals(misim_proto::aad::ListServicePrincipalsRequest {
                tenant_id: tenant_id.to_string(),
            })
            .await
            .map(|r| r.into_inner().service_principals)
            .map_err(|s| crate::error::ArmError::Unavailable(format!("azure ad: {}", s.message())))
    }

    /// Host `ListVms`: the resource IDs of the VMs (and web apps) placed on `host`, each with the
    /// IMDS endpoint the host serves it on (empty for web apps).
    ///
    /// # Errors
    /// [`crate::error::ArmError::Unavailable`] when the host cannot be reached.
    pub async fn list_vms(&self, host: &str) -> Result<Vec<(String, String)>> {
        self.host_client(host)?
            .list_vms(imds::ListVmsRequest {})
            .await
            .map(|r| {
                r.into_inner()
                    .vms
                    .into_iter()
                    .filter_map(|v| v.vm.map(|i| (i.resource_id, v.imds_endpoint)))
                    .collect()
            })
            .map_err(|s| {
                crate::error::ArmError::Unavailable(format!("host {host}: {}", s.message()))
            })
    }
}

/// The `misim.sim.v1.Health` gRPC service on ARM's gRPC port: [`Arm::consistency`] as a
/// `ConsistencyReport` (proto/misim/sim/v1/health.proto), read by `misim doctor` and
/// `misim up --wait-consistent`.
pub struct HealthGrpc {
    arm: std::sync::Arc<Arm>,
}

impl HealthGrpc {
    /// The tonic server for `arm`.
    pub fn server(
        arm: std::sync::Arc<Arm>,
    ) -> misim_proto::sim::health_server::HealthServer<HealthGrpc> {
        misim_proto::sim::health_server::HealthServer::new(HealthGrpc { arm })
    }
}

/// A consistency report as its proto message: `converging` when every difference is one the
/// reconciler repairs on its own.
pub fn report_pb(c: &Consistency) -> misim_proto::sim::ConsistencyReport {
    use misim_proto::sim as pb;
    pb::ConsistencyReport {
        consistent: c.consistent,
        converging: c.differences.iter().all(|d| d.converging),
        differences: c
            .differences
            .iter()
            .map(|d| pb::ConsistencyDifference {
                party: d.party.clone(),
                kind: d.kind.clone(),
                resource: d.resource.clone(),
                detail: d.detail.clone(),
                converging: d.converging,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl misim_proto::sim::health_server::Health for HealthGrpc {
    async fn consistency(
        &self,
        _: tonic::Request<misim_proto::sim::ConsistencyRequest>,
    ) -> std::result::Result<tonic::Response<misim_proto::sim::ConsistencyReport>, tonic::Status>
    {
        let c = self.arm.consistency().await?;
        Ok(tonic::Response::new(report_pb(&c)))
    }
}
