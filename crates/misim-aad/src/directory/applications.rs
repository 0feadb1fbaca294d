//! The directory's applications: registering apps with their service principal, app-role
//! assignments to managed identities, and resolving a token request's resource to an application
//! with the caller's roles (see [`crate::applications`] for the model and its sources).
//!
//! Writes take the directory's write lock, so an assignment never names a principal that a
//! concurrent deletion has just removed.

use tracing::info;

use super::Directory;
use crate::applications::{
    check_identifier_uri, normalize_uri, AppAudience, AppRole, AppRoleAssignment, Application,
    GraphError, NewApplication,
};
use crate::error::{AadError, Result};

/// Graph's `allowedMemberTypes` value of roles that service principals (and so managed
/// identities) can be assigned.
pub const MEMBER_TYPE_APPLICATION: &str = "Application";

/// How an assignment names the app role.
#[derive(Clone, Debug)]
pub enum RoleRef {
    /// By the role's ID (Graph's `appRoleId`).
    Id(String),
    /// By the role's `value` (what `roles` carries).
    Value(String),
}

type GraphResult<T> = std::result::Result<T, GraphError>;

fn bad(msg: impl Into<String>) -> GraphError {
    GraphError::BadRequest(msg.into())
}

fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Directory {
    /// Registers an application and creates its service principal, defining one
    /// `allowedMemberTypes: ["Application"]`, enabled app role per entry of `new.app_roles`.
    ///
    /// # Errors
    /// [`GraphError::BadRequest`] for an empty display name, an identifier URI Entra would refuse
    /// or one already used in the tenant ("Another object with the same value for property
    /// identifierUris already exists."), an empty or duplicate role value, or a token version other
    /// than 1 or 2; [`AadError::TenantNotFound`].
    pub async fn create_application(&self, new: NewApplication) -> GraphResult<Application> {
        if new.display_name.trim().is_empty() {
            return Err(bad("Property 'displayName' is required."));
        }
        if !matches!(new.requested_access_token_version, None | Some(1) | Some(2)) {
            return Err(bad(
                "Property 'api.requestedAccessTokenVersion' must be null, 1 or 2.",
            ));
        }
        let tenant = self.tenant(&new.tenant_id)?;
        let mut seen_uris = std::collections::BTreeSet::new();
        for uri in &new.identifier_uris {
            check_identifier_uri(uri, &tenant.default_domain)?;
            if !seen_uris.insert(normalize_uri(uri)) {
                return Err(bad(format!(
                    "Request contains a property with duplicate values: identifierUris '{uri}'."
                )));
            }
        }
        let mut roles: Vec<AppRole> = Vec::new();
        for (value, display_name, description) in new.app_roles {
            let value = value.trim().to_string();
            if value.is_empty() || value.contains(char::is_whitespace) {
                return Err(bad(format!(
                    "App role value '{value}' is invalid: it must be non-empty and contain no spaces."
                )));
            }
            if roles.iter().any(|r| r.value == value) {
                return Err(bad(format!(
                    "Request contains a property with duplicate values: appRoles value '{value}'."
                )));
            }
            let display_name = if display_name.trim().is_empty() {
                value.clone()
            } else {
                display_name
            };
            let description = if description.trim().is_empty() {
                display_name.clone()
            } else {
                description
            };
            roles.push(AppRole {
                id: new_guid(),
                value,
                display_name,
                description,
                allowed_member_types: vec![MEMBER_TYPE_APPLICATION.to_string()],
                is_enabled: true,
            });
        }
        let _w = self.writes.lock().await;
        for uri in &new.identifier_uris {
            if self
                .store
                .application_by_uri(&tenant.tenant_id, uri)?
                .is_some()
            {
                return Err(bad(
                    "Another object with the same value for property identifierUris already exists.",
                ));
            }
        }
        let app = Application {
            tenant_id: tenant.tenant_id,
            object_id: new_guid(),
            app_id: new_guid(),
            display_name: new.display_name,
            identifier_uris: new.identifier_uris,
            app_roles: roles,
            requested_access_token_version: new.requested_access_token_version,
            service_principal_id: new_guid(),
            created_date_time: self.clock.now(),
        };
        self.store.put_application(&app)?;
        self.store.flush().await?;
        info!(
            app_id = %app.app_id,
            uris = ?app.identifier_uris,
            roles = app.app_roles.len(),
            "registered application and its service principal"
        );
        Ok(app)
    }

    /// The application named by `id`: its appId, object ID or one of its identifier URIs.
    ///
    /// # Errors
    /// [`GraphError::NotFound`] when none matches; [`AadError::TenantNotFound`].
    pub fn application(&self, tenant_id: &str, id: &str) -> GraphResult<Application> {
        let tenant = self.tenant(tenant_id)?;
        self.find_application(&tenant.tenant_id, id)?
            .ok_or_else(|| GraphError::NotFound(id.to_string()))
    }

    fn find_application(&self, tenant_id: &str, id: &str) -> Result<Option<Application>> {
        if id.trim().is_empty() {
            return Ok(None);
        }
        if let Some(app) = self.store.application_by_app_id(tenant_id, id)? {
            return Ok(Some(app));
        }
        if let Some(app) = self.store.application(tenant_id, id)? {
            return Ok(Some(app));
        }
        self.store.application_by_uri(tenant_id, id)
    }

    /// All applications of a tenant.
    ///
    /// # Errors
    /// [`AadError::TenantNotFound`].
    pub fn applications(&self, tenant_id: &str) -> Result<Vec<Application>> {
        let tenant = self.tenant(tenant_id)?;
        self.store.applications(&tenant.tenant_id)
    }

    /// Deletes an application, its service principal and every assignment of its roles.
    ///
    /// # Errors
    /// [`GraphError::NotFound`] when no application matches `id`.
    pub async fn delete_application(&self, tenant_id: &str, id: &str) -> GraphResult<()> {
        let tenant = self.tenant(tenant_id)?;
        let _w = self.writes.lock().await;
        let app = self
            .find_application(&tenant.tenant_id, id)?
            .ok_or_else(|| GraphError::NotFound(id.to_string()))?;
        self.store
            .remove_application(&tenant.tenant_id, &app.object_id)?;
        self.store.flush().await?;
        info!(app_id = %app.app_id, "deleted application, its service principal and its app-role assignments");
        Ok(())
    }

    /// Assigns one of application `app`'s app roles to the managed identity whose service
    /// principal has object ID `principal_id` (Graph `POST
    /// /servicePrincipals/{resource id}/appRoleAssignedTo`).
    ///
    /// # Errors
    /// [`GraphError::NotFound`] for an unknown application; [`GraphError::BadRequest`] for an
    /// unknown principal, a role the application does not define for applications (or has
    /// disabled), or an assignment that exists already.
    pub async fn create_app_role_assignment(
        &self,
        tenant_id: &str,
        principal_id: &str,
        app: &str,
        role: RoleRef,
    ) -> GraphResult<AppRoleAssignment> {
        let tenant = self.tenant(tenant_id)?;
        let _w = self.writes.lock().await;
        let app = self
            .find_application(&tenant.tenant_id, app)?
            .ok_or_else(|| GraphError::NotFound(app.to_string()))?;
        let principal = self
            .store
            .principal(&tenant.tenant_id, principal_id)?
            .ok_or_else(|| {
                bad(format!(
                    "Invalid value specified for property 'principalId' of resource \
                     'AppRoleAssignment': no service principal '{principal_id}' in the tenant."
                ))
            })?;
        let role = app
            .app_roles
            .iter()
            .find(|r| match &role {
                RoleRef::Id(id) => r.id.eq_ignore_ascii_case(id),
                RoleRef::Value(v) => r.value == *v,
            })
            .filter(|r| {
                r.is_enabled
                    && r.allowed_member_types
                        .iter()
                        .any(|t| t == MEMBER_TYPE_APPLICATION)
            })
            .ok_or_else(|| {
                let defined: Vec<&str> = app.app_roles.iter().map(|r| r.value.as_str()).collect();
                bad(format!(
                    "Permission being assigned was not found on application '{}' (its app roles: {}).",
                    app.app_id,
                    if defined.is_empty() {
                        "none".to_string()
                    } else {
                        defined.join(", ")
                    }
                ))
            })?;
        let existing = self
            .store
            .app_role_assignments(&tenant.tenant_id, Some(&app.object_id))?;
        if existing.iter().any(|a| {
            a.principal_id.eq_ignore_ascii_case(&principal.object_id)
                && a.app_role_id.eq_ignore_ascii_case(&role.id)
        }) {
            return Err(bad(
                "Permission being assigned already exists on the object.",
            ));
        }
        let assignment = AppRoleAssignment {
            tenant_id: tenant.tenant_id.clone(),
            id: new_guid(),
            principal_id: principal.object_id.clone(),
            principal_display_name: principal.display_name.clone(),
            resource_id: app.service_principal_id.clone(),
            resource_display_name: app.display_name.clone(),
            app_role_id: role.id.clone(),
            created_date_time: self.clock.now(),
        };
        self.store
            .put_app_role_assignment(&app.object_id, &assignment)?;
        self.store.flush().await?;
        info!(
            app_id = %app.app_id,
            role = %role.value,
            principal_id = %principal.object_id,
            identity = %principal.msi_resource_id,
            "assigned app role to managed identity"
        );
        Ok(assignment)
    }

    /// The tenant's app-role assignments, optionally only those to application `app` (appId,
    /// object ID or identifier URI) and/or of principal `principal_id`.
    ///
    /// # Errors
    /// [`GraphError::NotFound`] for an unknown application; [`AadError::TenantNotFound`].
    pub fn app_role_assignments(
        &self,
        tenant_id: &str,
        app: Option<&str>,
        principal_id: Option<&str>,
    ) -> GraphResult<Vec<AppRoleAssignment>> {
        let tenant = self.tenant(tenant_id)?;
        let app_oid = match app {
            Some(id) => Some(
                self.find_application(&tenant.tenant_id, id)?
                    .ok_or_else(|| GraphError::NotFound(id.to_string()))?
                    .object_id,
            ),
            None => None,
        };
        let mut all = self
            .store
            .app_role_assignments(&tenant.tenant_id, app_oid.as_deref())?;
        if let Some(p) = principal_id {
            all.retain(|a| a.principal_id.eq_ignore_ascii_case(p));
        }
        Ok(all)
    }

    /// Deletes an app-role assignment by ID.
    ///
    /// # Errors
    /// [`GraphError::NotFound`] when there is none with this ID.
    pub async fn delete_app_role_assignment(&self, tenant_id: &str, id: &str) -> GraphResult<()> {
        let tenant = self.tenant(tenant_id)?;
        let _w = self.writes.lock().await;
        let removed = self
            .store
            .remove_app_role_assignments(&tenant.tenant_id, |a| a.id.eq_ignore_ascii_case(id))?;
        if removed == 0 {
            return Err(GraphError::NotFound(id.to_string()));
        }
        self.store.flush().await?;
        info!(assignment = %id, "deleted app role assignment");
        Ok(())
    }

    /// Removes the assignments held by a deleted principal (the caller holds the write lock and
    /// flushes).
    pub(super) fn remove_assignments_of(&self, tenant_id: &str, principal_id: &str) -> Result<()> {
        let n = self.store.remove_app_role_assignments(tenant_id, |a| {
            a.principal_id.eq_ignore_ascii_case(principal_id)
        })?;
        if n > 0 {
            info!(principal_id = %principal_id, removed = n, "removed the deleted principal's app role assignments");
        }
        Ok(())
    }

    /// The application a token request's resource names in the tenant (an identifier URI with or
    /// without trailing slash, any casing, or the appId), with the values of the enabled app roles
    /// assigned to `principal_id`; `None` when the resource is no registered application.
    ///
    /// # Errors
    /// [`AadError::Store`] on store failure.
    pub fn resolve_application_audience(
        &self,
        tenant_id: &str,
        resource: &str,
        principal_id: &str,
    ) -> std::result::Result<Option<AppAudience>, AadError> {
        let found = match self.store.application_by_uri(tenant_id, resource)? {
            Some(app) => Some(app),
            None => self
                .store
                .application_by_app_id(tenant_id, resource.trim_end_matches('/'))?,
        };
        let Some(application) = found else {
            return Ok(None);
        };
        let held: Vec<String> = self
            .store
            .app_role_assignments(tenant_id, Some(&application.object_id))?
            .into_iter()
            .filter(|a| a.principal_id.eq_ignore_ascii_case(principal_id))
            .map(|a| a.app_role_id)
            .collect();
        let roles = application
            .app_roles
            .iter()
            .filter(|r| r.is_enabled && held.iter().any(|id| id.eq_ignore_ascii_case(&r.id)))
            .map(|r| r.value.clone())
            .collect();
        Ok(Some(AppAudience { application, roles }))
    }
}
