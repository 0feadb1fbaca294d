//! Applications and app-role assignments in the store.
//!
//! Tables: `applications` (`{tenant}/{object id}` → [`Application`]), `application_index`
//! (`{tenant}/app:{appId}`, `{tenant}/uri:{normalized identifier URI}` → object ID) and
//! `app_role_assignments` (`{tenant}/{application object id}/{assignment id}` →
//! [`AppRoleAssignment`]). An application with its index entries, and its deletion with its
//! assignments, are each one store transaction.

use misim_core::store::Table;
use misim_core::{Store, StoreError};

use super::{sp_key, AadStore};
use crate::applications::{normalize_uri, AppRoleAssignment, Application};
use crate::error::Result;

/// The three tables of applications.
#[derive(Clone)]
pub struct AppTables {
    apps: Table<Application>,
    index: Table<String>,
    assignments: Table<AppRoleAssignment>,
}

impl AppTables {
    /// Opens the tables in `store`.
    ///
    /// # Errors
    /// [`StoreError`] when the engine cannot open a table.
    pub fn open(store: &Store) -> std::result::Result<Self, StoreError> {
        Ok(AppTables {
            apps: store.table("applications")?,
            index: store.table("application_index")?,
            assignments: store.table("app_role_assignments")?,
        })
    }
}

fn app_id_key(tenant_id: &str, app_id: &str) -> String {
    sp_key(tenant_id, &format!("app:{app_id}"))
}

fn uri_key(tenant_id: &str, uri: &str) -> String {
    sp_key(tenant_id, &format!("uri:{}", normalize_uri(uri)))
}

fn index_keys(app: &Application) -> Vec<String> {
    std::iter::once(app_id_key(&app.tenant_id, &app.app_id))
        .chain(
            app.identifier_uris
                .iter()
                .map(|u| uri_key(&app.tenant_id, u)),
        )
        .collect()
}

fn tenant_prefix(tenant_id: &str) -> String {
    format!("{}/", tenant_id.to_ascii_lowercase())
}

fn assignment_prefix(tenant_id: &str, app_object_id: &str) -> String {
    format!("{}/", sp_key(tenant_id, app_object_id))
}

impl AadStore {
    /// The application with this object ID.
    pub fn application(&self, tenant_id: &str, object_id: &str) -> Result<Option<Application>> {
        Ok(self.apps.apps.get(&sp_key(tenant_id, object_id))?)
    }

    /// The application with this appId.
    pub fn application_by_app_id(
        &self,
        tenant_id: &str,
        app_id: &str,
    ) -> Result<Option<Application>> {
        match self.apps.index.get(&app_id_key(tenant_id, app_id))? {
            Some(oid) => self.application(tenant_id, &oid),
            None => Ok(None),
        }
    }

    /// The application with this identifier URI (trailing slash and casing ignored).
    pub fn application_by_uri(&self, tenant_id: &str, uri: &str) -> Result<Option<Application>> {
        match self.apps.index.get(&uri_key(tenant_id, uri))? {
            Some(oid) => self.application(tenant_id, &oid),
            None => Ok(None),
        }
    }

    /// All applications of a tenant, by object ID.
    pub fn applications(&self, tenant_id: &str) -> Result<Vec<Application>> {
        Ok(self
            .apps
            .apps
            .scan_prefix(&tenant_prefix(tenant_id))?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    /// Writes a new application and its appId and identifier-URI index entries in one transaction.
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when the store fails; then nothing is written.
    pub fn put_application(&self, app: &Application) -> Result<()> {
        let key = sp_key(&app.tenant_id, &app.object_id);
        self.transaction(|tx| {
            tx.put(&self.apps.apps, &key, app)?;
            for k in index_keys(app) {
                tx.put(&self.apps.index, &k, &app.object_id)?;
            }
            Ok(())
        })
    }

    /// Removes an application, its index entries and every assignment of its roles, in one
    /// transaction; returns it if it existed.
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when the store fails; then nothing is removed.
    pub fn remove_application(
        &self,
        tenant_id: &str,
        object_id: &str,
    ) -> Result<Option<Application>> {
        let Some(app) = self.application(tenant_id, object_id)? else {
            return Ok(None);
        };
        let key = sp_key(tenant_id, object_id);
        let keys = index_keys(&app);
        let assignments: Vec<String> = self
            .apps
            .assignments
            .scan_prefix(&assignment_prefix(tenant_id, object_id))?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        self.transaction(|tx| {
            tx.remove(&self.apps.apps, &key)?;
            for k in &keys {
                tx.remove(&self.apps.index, k)?;
            }
            for k in &assignments {
                tx.remove(&self.apps.assignments, k)?;
            }
            Ok(())
        })?;
        Ok(Some(app))
    }

    /// The assignments of a tenant, optionally only those to one application (by object ID).
    pub fn app_role_assignments(
        &self,
        tenant_id: &str,
        app_object_id: Option<&str>,
    ) -> Result<Vec<AppRoleAssignment>> {
        let prefix = match app_object_id {
            Some(oid) => assignment_prefix(tenant_id, oid),
            None => tenant_prefix(tenant_id),
        };
        Ok(self
            .apps
            .assignments
            .scan_prefix(&prefix)?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    /// Writes an assignment to the application with object ID `app_object_id`.
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when the store fails.
    pub fn put_app_role_assignment(
        &self,
        app_object_id: &str,
        a: &AppRoleAssignment,
    ) -> Result<()> {
        let key = format!(
            "{}{}",
            assignment_prefix(&a.tenant_id, app_object_id),
            a.id.to_ascii_lowercase()
        );
        Ok(self.apps.assignments.put(&key, a)?)
    }

    /// Removes the tenant's assignments for which `matches` is true; returns how many.
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when the store fails; then nothing is removed.
    pub fn remove_app_role_assignments(
        &self,
        tenant_id: &str,
        matches: impl Fn(&AppRoleAssignment) -> bool,
    ) -> Result<usize> {
        let keys: Vec<String> = self
            .apps
            .assignments
            .scan_prefix(&tenant_prefix(tenant_id))?
            .into_iter()
            .filter(|(_, a)| matches(a))
            .map(|(k, _)| k)
            .collect();
        self.transaction(|tx| {
            for k in &keys {
                tx.remove(&self.apps.assignments, k)?;
            }
            Ok(())
        })?;
        Ok(keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applications::AppRole;

    const TID: &str = "11111111-2222-3333-4444-555555555555";

    fn app(oid: &str, app_id: &str, uri: &str) -> Application {
        Application {
            tenant_id: TID.into(),
            object_id: oid.into(),
            app_id: app_id.into(),
            display_name: "orders".into(),
            identifier_uris: vec![uri.into()],
            app_roles: vec![AppRole {
                id: "r1".into(),
                value: "Orders.Read".into(),
                display_name: "Orders.Read".into(),
                description: "Orders.Read".into(),
                allowed_member_types: vec!["Application".into()],
                is_enabled: true,
            }],
            requested_access_token_version: None,
            service_principal_id: format!("sp-{oid}"),
            created_date_time: 1,
        }
    }

    fn grant(id: &str, principal: &str, resource: &str) -> AppRoleAssignment {
        AppRoleAssignment {
            tenant_id: TID.into(),
            id: id.into(),
            principal_id: principal.into(),
            principal_display_name: "vm".into(),
            resource_id: resource.into(),
            resource_display_name: "orders".into(),
            app_role_id: "r1".into(),
            created_date_time: 1,
        }
    }

    #[test]
    fn applications_resolve_by_app_id_and_uri_and_leave_with_their_assignments() {
        let store = AadStore::temporary();
        let (a, b) = (
            app("o1", "A1", "api://Orders"),
            app("o2", "a2", "api://stock"),
        );
        store.put_application(&a).unwrap();
        store.put_application(&b).unwrap();
        assert_eq!(
            store.application_by_app_id(TID, "a1").unwrap(),
            Some(a.clone())
        );
        assert_eq!(
            store.application_by_uri(TID, "API://orders/").unwrap(),
            Some(a.clone())
        );
        store
            .put_app_role_assignment("o1", &grant("g1", "p1", "sp-o1"))
            .unwrap();
        store
            .put_app_role_assignment("o2", &grant("g2", "p1", "sp-o2"))
            .unwrap();
        assert_eq!(
            store.app_role_assignments(TID, Some("o1")).unwrap().len(),
            1
        );
        assert_eq!(store.remove_application(TID, "o1").unwrap(), Some(a));
        assert_eq!(store.application_by_uri(TID, "api://orders").unwrap(), None);
        assert_eq!(store.application_by_app_id(TID, "a1").unwrap(), None);
        let left = store.app_role_assignments(TID, None).unwrap();
        assert_eq!(
            left.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
            ["g2"]
        );
        assert_eq!(
            store
                .remove_app_role_assignments(TID, |g| g.principal_id == "p1")
                .unwrap(),
            1
        );
        assert!(store.app_role_assignments(TID, None).unwrap().is_empty());
        assert_eq!(store.remove_application(TID, "o1").unwrap(), None);
    }
}
