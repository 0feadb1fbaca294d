//! Azure RBAC (step 4): role assignments at subscription, group or resource scope, and
//! [`Arm::authorize`] / [`Arm::authorize_data`], which honour scope inheritance (subscription → group →
//! resource); the role definitions themselves are in [`crate::authorization::roles`].

use misim_core::ResourceId;
use tracing::info;

use crate::error::{ArmError, Result};
use crate::model::RoleAssignment;
use crate::service::Arm;

pub(crate) use crate::authorization::roles::{find_role, RoleDefinition, BUILT_IN_ROLES};

impl Arm {
    /// Checks that a scope (subscription, group, VM or UAMI) exists.
    fn require_scope(&self, scope: &ResourceId) -> Result<()> {
        let sub = self.subscription(scope.subscription_id())?;
        let Some(group) = scope.resource_group_name() else {
            return if scope.resource_type().is_none() {
                Ok(())
            } else {
                Err(self.scope_not_found(scope))
            };
        };
        self.group(&sub.subscription_id, group)?;
        if scope.resource_type().is_none() {
            return Ok(());
        }
        let exists = self.store.vm(scope)?.is_some_and(|v| !v.deleting)
            || self.store.uami(scope)?.is_some_and(|u| !u.deleting)
            || self
                .store
                .vmss
                .get(&scope.key())?
                .is_some_and(|v| !v.deleting)
            || self
                .store
                .vaults
                .get(&scope.name().to_ascii_lowercase())?
                .is_some_and(|v| v.id == *scope);
        if exists {
            Ok(())
        } else {
            Err(self.scope_not_found(scope))
        }
    }

    fn scope_not_found(&self, scope: &ResourceId) -> ArmError {
        ArmError::ResourceNotFound {
            resource_type: scope.resource_type().unwrap_or_default(),
            name: scope.name().to_string(),
            group: scope.resource_group_name().unwrap_or_default().to_string(),
        }
    }

    /// Assigns `role` to `principal_id` at `scope`. Assigning the same role to the same principal at
    /// the same scope again returns the existing assignment (what `az role assignment create` shows;
    /// ARM itself answers 409 `RoleAssignmentExists` for a new assignment name).
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`] (bad scope or principal id), [`ArmError::RoleDefinitionNotFound`],
    /// scope lookups ([`ArmError::ResourceGroupNotFound`], [`ArmError::ResourceNotFound`]).
    pub async fn create_role_assignment(
        &self,
        scope: &str,
        role: &str,
        principal_id: &str,
        principal_type: &str,
    ) -> Result<RoleAssignment> {
        self.put_role_assignment(scope, None, role, principal_id, principal_type)
            .await
            .map(|(ra, _)| ra)
    }

    /// Creates a role assignment named `name` (a GUID, as in ARM's
    /// `PUT {scope}/providers/Microsoft.Authorization/roleAssignments/{name}`), or a new GUID when
    /// `None`. Returns the assignment and whether it was created. Putting the same assignment again is
    /// idempotent; the same principal × role × scope under another name is 409 `RoleAssignmentExists`.
    ///
    /// # Errors
    /// As [`Arm::create_role_assignment`], plus [`ArmError::Conflict`].
    pub async fn put_role_assignment(
        &self,
        scope: &str,
        name: Option<&str>,
        role: &str,
        principal_id: &str,
        principal_type: &str,
    ) -> Result<(RoleAssignment, bool)> {
        let scope = ResourceId::parse(scope)?;
        let def =
            find_role(role).ok_or_else(|| ArmError::RoleDefinitionNotFound(role.to_string()))?;
        let principal = uuid::Uuid::parse_str(principal_id)
            .map_err(|_| {
                ArmError::InvalidArgument(format!(
                    "The principal id '{principal_id}' is not a valid GUID."
                ))
            })?
            .to_string();
        self.require_scope(&scope)?;
        let _guard = self.locks.lock("role-assignments").await;
        if let Some(existing) = self
            .store
            .role_assignments
            .values()?
            .into_iter()
            .find(|ra| {
                ra.scope == scope
                    && ra.principal_id.eq_ignore_ascii_case(&principal)
                    && ra.role_definition_guid == def.guid
            })
        {
            if name.is_none_or(|n| n.eq_ignore_ascii_case(&existing.name)) {
                return Ok((existing, false));
            }
            return Err(ArmError::Conflict {
                code: "RoleAssignmentExists",
                message: "The role assignment already exists.".into(),
            });
        }
        let name = match name {
            Some(n) => uuid::Uuid::parse_str(n)
                .map_err(|_| {
                    ArmError::InvalidArgument(format!(
                        "The role assignment ID '{n}' is not valid. The role assignment ID must be a GUID."
                    ))
                })?
                .to_string(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let ra = RoleAssignment {
            id: format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
            name,
            scope: scope.clone(),
            role_definition_guid: def.guid.to_string(),
            principal_id: principal.clone(),
            principal_type: if principal_type.is_empty() {
                "ServicePrincipal".into()
            } else {
                principal_type.to_string()
            },
            effective_at: match self.clock().propagation().role_assignment_secs() {
                0 => 0,
                delay => self.clock().now().saturating_add(delay),
            },
            revoked_until: 0,
        };
        self.store
            .role_assignments
            .put(&ra.id.to_ascii_lowercase(), &ra)?;
        self.store.flush().await?;
        info!(step = 4, principal = %principal, role = def.role_name, scope = %scope, assignment = %ra.name, "created role assignment");
        let step = misim_core::telemetry::step_span(4, "arm"); // the flow's trace
        step.record("principal", principal.as_str());
        step.record("resource", scope.as_str());
        step.record("outcome", "success");
        Ok((ra, true))
    }

    /// Role assignments that apply at `scope` (at it or inherited from its parents), optionally only
    /// those of `principal_id`. An empty scope means the default subscription.
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`] for a malformed scope, subscription lookups.
    pub fn list_role_assignments(
        &self,
        scope: &str,
        principal_id: &str,
    ) -> Result<Vec<RoleAssignment>> {
        let scope = if scope.is_empty() {
            self.subscription("")?.id()
        } else {
            ResourceId::parse(scope)?
        };
        Ok(self
            .store
            .role_assignments
            .values()?
            .into_iter()
            .filter(|ra| scope.is_within(&ra.scope))
            .filter(|ra| {
                principal_id.is_empty() || ra.principal_id.eq_ignore_ascii_case(principal_id)
            })
            .collect())
    }

    /// Deletes a role assignment by id; deleting an absent one succeeds (ARM answers 204).
    ///
    /// # Errors
    /// Store failures.
    pub async fn delete_role_assignment(&self, id: &str) -> Result<Option<RoleAssignment>> {
        let key = id.trim_end_matches('/').to_ascii_lowercase();
        // Deletions propagate too: the assignment still authorizes until the delay has passed. It
        // moves to the revoked table in one transaction.
        let delay = self.clock().propagation().role_assignment_secs();
        let until = self.clock().now().saturating_add(delay);
        let removed = self.store.transaction(|tx| {
            let removed = tx.remove(&self.store.role_assignments, &key)?;
            if let Some(ra) = removed.as_ref().filter(|_| delay > 0) {
                let mut lingering = ra.clone();
                lingering.revoked_until = until;
                tx.put(&self.store.revoked_role_assignments, &key, &lingering)?;
            }
            Ok::<_, ArmError>(removed)
        })?;
        if let Some(ra) = &removed {
            self.store.flush().await?;
            info!(principal = %ra.principal_id, scope = %ra.scope, assignment = %ra.name, "deleted role assignment");
        }
        Ok(removed)
    }

    /// True when `principal_id` holds a role at `resource` or one of its parents that permits `action`.
    ///
    /// # Errors
    /// Store failures.
    pub fn authorize(
        &self,
        principal_id: &str,
        action: &str,
        resource: &ResourceId,
    ) -> Result<bool> {
        Ok(self.effective_assignments()?.iter().any(|ra| {
            ra.principal_id.eq_ignore_ascii_case(principal_id)
                && resource.is_within(&ra.scope)
                && find_role(&ra.role_definition_guid).is_some_and(|r| r.allows(action))
        }))
    }

    /// True when `principal_id` holds a role at `resource` or a parent whose dataActions permit
    /// `data_action` (control-plane `actions` such as Owner's `*` never grant data actions).
    ///
    /// # Errors
    /// Store failures.
    pub fn authorize_data(
        &self,
        principal_id: &str,
        data_action: &str,
        resource: &ResourceId,
    ) -> Result<bool> {
        Ok(self.effective_assignments()?.iter().any(|ra| {
            ra.principal_id.eq_ignore_ascii_case(principal_id)
                && resource.is_within(&ra.scope)
                && find_role(&ra.role_definition_guid).is_some_and(|r| r.allows_data(data_action))
        }))
    }

    /// The assignments that authorize now: those whose creation has propagated, and deleted ones
    /// whose deletion has not (`misim up --propagation role-assignment=…`).
    fn effective_assignments(&self) -> Result<Vec<RoleAssignment>> {
        let now = self.clock().now();
        let mut out: Vec<RoleAssignment> = self
            .store
            .role_assignments
            .values()?
            .into_iter()
            .filter(|ra| ra.effective_at <= now)
            .collect();
        for ra in self.store.revoked_role_assignments.values()? {
            if now < ra.revoked_until {
                out.push(ra);
            } else {
                self.store
                    .revoked_role_assignments
                    .remove(&ra.id.to_ascii_lowercase())?;
            }
        }
        Ok(out)
    }
}
