//! A small Key Vault: vault resources (`Microsoft.KeyVault/vaults/{name}`, RBAC permission model)
//! and their secrets, so a workload can call a data plane with its managed-identity token. Real Key
//! Vault serves `https://{vault}.vault.azure.net/secrets/{name}`; misim serves the same API under
//! `/vaults/{vault}/secrets/{name}` on ARM's REST listener (see `rest::vault`).

use misim_core::ResourceId;
use tracing::info;

use crate::error::{ArmError, Result};
pub use crate::model::{Secret, Vault};
use crate::service::Arm;

/// Days a soft-deleted secret is kept before it may be purged (Key Vault's default retention).
pub const RETENTION_DAYS: i64 = 90;

fn secret_key(vault: &str, name: &str) -> String {
    format!("{vault}/{name}").to_ascii_lowercase()
}

fn version_key(vault: &str, name: &str, version: &str) -> String {
    format!("{vault}/{name}/{version}").to_ascii_lowercase()
}

/// Key Vault name rule: 3–24 letters, digits and dashes, starting with a letter, no `--`, not ending
/// with a dash.
fn validate_vault_name(name: &str) -> Result<()> {
    let ok = (3..=24).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && !name.ends_with('-')
        && !name.contains("--")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ArmError::InvalidArgument(format!(
            "The vault name '{name}' is invalid. A vault's name must be between 3-24 alphanumeric characters. The name must begin with a letter, end with a letter or digit, and not contain consecutive hyphens."
        )))
    }
}

/// Key Vault secret name rule: 1–127 letters, digits and dashes.
fn validate_secret_name(name: &str) -> Result<()> {
    if (1..=127).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        Ok(())
    } else {
        Err(ArmError::InvalidArgument(format!(
            "The secret name '{name}' is invalid. Secret names may only contain alphanumeric characters and dashes (1-127)."
        )))
    }
}

fn vault_not_found(name: &str) -> ArmError {
    ArmError::ResourceNotFound {
        resource_type: "Microsoft.KeyVault/vaults".into(),
        name: name.into(),
        group: String::new(),
    }
}

impl Arm {
    /// Creates a vault (idempotent: creating it again in the same group returns it). Vault names are
    /// globally unique, as in Azure (409 `VaultAlreadyExists` otherwise).
    ///
    /// # Errors
    /// Group lookups, name rules, [`ArmError::Conflict`].
    pub async fn create_vault(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
        location: &str,
    ) -> Result<Vault> {
        let g = self.group(subscription_id, group)?;
        validate_vault_name(name)?;
        let id = ResourceId::resource(
            g.id.subscription_id(),
            g.id.name(),
            "Microsoft.KeyVault",
            "vaults",
            name,
        )?;
        let _guard = self.locks.lock("vaults").await;
        if let Some(existing) = self.store.vaults.get(&name.to_ascii_lowercase())? {
            if existing.id == id {
                return Ok(existing);
            }
            return Err(ArmError::Conflict {
                code: "VaultAlreadyExists",
                message: format!("The vault name '{name}' is already in use. Vault names are globally unique so it is possible that the name is already taken."),
            });
        }
        let vault = Vault {
            id,
            location: if location.is_empty() {
                g.location.clone()
            } else {
                location.to_string()
            },
            tenant_id: self.subscription(g.id.subscription_id())?.tenant_id,
            port: 0,
        };
        self.store.vaults.put(&name.to_ascii_lowercase(), &vault)?;
        self.store.flush().await?;
        info!(vault = %vault.id, "created key vault");
        Ok(vault)
    }

    /// The vault named `name`.
    ///
    /// # Errors
    /// [`ArmError::ResourceNotFound`].
    pub fn vault(&self, name: &str) -> Result<Vault> {
        self.store
            .vaults
            .get(&name.to_ascii_lowercase())?
            .ok_or_else(|| vault_not_found(name))
    }

    /// Sets a secret (a new version; `az keyvault secret set`).
    ///
    /// # Errors
    /// [`ArmError::ResourceNotFound`] for an unknown vault, name rules, [`ArmError::Conflict`] while a
    /// deleted secret of that name is kept (Key Vault: recover or purge it first).
    pub async fn set_secret(&self, vault: &str, name: &str, value: &str) -> Result<Secret> {
        self.set_secret_with(vault, name, value, "", Default::default())
            .await
    }

    /// As [`Arm::set_secret`], with `contentType` and tags.
    ///
    /// # Errors
    /// As [`Arm::set_secret`].
    pub async fn set_secret_with(
        &self,
        vault: &str,
        name: &str,
        value: &str,
        content_type: &str,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<Secret> {
        let v = self.vault(vault)?;
        validate_secret_name(name)?;
        let key = secret_key(vault, name);
        let _guard = self.locks.lock(&key).await;
        let now = self.clock.now();
        let current = self.store.secrets.get(&key)?;
        if current.as_ref().is_some_and(|c| c.deleted.is_some()) {
            return Err(ArmError::Conflict {
                code: "Conflict",
                message: format!("Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."),
            });
        }
        let secret = Secret {
            vault: v.id.name().to_string(),
            name: name.to_string(),
            value: value.to_string(),
            version: uuid::Uuid::new_v4().simple().to_string(),
            created: now,
            updated: now,
            content_type: content_type.to_string(),
            tags,
            deleted: None,
        };
        let version = version_key(vault, name, &secret.version);
        self.store.transaction(|tx| {
            tx.put(&self.store.secrets, &key, &secret)?;
            tx.put(&self.store.secrets, &version, &secret)?;
            Ok::<_, ArmError>(())
        })?;
        self.store.flush().await?;
        info!(vault = %v.id, secret = name, "set secret");
        Ok(secret)
    }

    /// The current version of a live secret.
    ///
    /// # Errors
    /// [`ArmError::SecretNotFound`].
    pub fn secret(&self, vault: &str, name: &str) -> Result<Secret> {
        self.store
            .secrets
            .get(&secret_key(vault, name))?
            .filter(|s| s.deleted.is_none())
            .ok_or_else(|| ArmError::SecretNotFound(name.to_string()))
    }

    /// One version of a live secret (the current one for an empty `version`).
    ///
    /// # Errors
    /// [`ArmError::SecretNotFound`].
    pub fn secret_version(&self, vault: &str, name: &str, version: &str) -> Result<Secret> {
        let current = self.secret(vault, name)?;
        if version.is_empty() || version.eq_ignore_ascii_case(&current.version) {
            return Ok(current);
        }
        self.store
            .secrets
            .get(&version_key(vault, name, version))?
            .ok_or_else(|| ArmError::SecretNotFound(format!("{name}/{version}")))
    }

    /// Every secret of a vault (current versions, live or deleted), by name.
    ///
    /// # Errors
    /// Store failures.
    pub fn list_secrets(&self, vault: &str, deleted: bool) -> Result<Vec<Secret>> {
        let prefix = format!("{}/", vault.to_ascii_lowercase());
        let mut out: Vec<Secret> = self
            .store
            .secrets
            .scan_prefix(&prefix)?
            .into_iter()
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(_, s)| s)
            .filter(|s| s.deleted.is_some() == deleted)
            .collect();
        out.sort_by_key(|s| s.name.to_ascii_lowercase());
        Ok(out)
    }

    /// Every version of a live secret, oldest first.
    ///
    /// # Errors
    /// [`ArmError::SecretNotFound`].
    pub fn list_secret_versions(&self, vault: &str, name: &str) -> Result<Vec<Secret>> {
        let prefix = format!("{}/", secret_key(vault, name));
        let mut out: Vec<Secret> = self
            .store
            .secrets
            .scan_prefix(&prefix)?
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        // Secrets set before versions were recorded have only their current version.
        let current = self.secret(vault, name)?;
        if !out.iter().any(|s| s.version == current.version) {
            out.push(current);
        }
        out.sort_by_key(|s| (s.created, s.version.clone()));
        Ok(out)
    }

    /// Soft-deletes a secret (all versions): it moves to the vault's deleted secrets.
    ///
    /// # Errors
    /// [`ArmError::SecretNotFound`].
    pub async fn delete_secret(&self, vault: &str, name: &str) -> Result<Secret> {
        let key = secret_key(vault, name);
        let _guard = self.locks.lock(&key).await;
        let mut s = self.secret(vault, name)?;
        s.deleted = Some(self.clock.now());
        self.store.secrets.put(&key, &s)?;
        self.store.flush().await?;
        info!(vault, secret = name, "soft-deleted secret");
        Ok(s)
    }

    /// A soft-deleted secret.
    ///
    /// # Errors
    /// [`ArmError::SecretNotFound`] when no deleted secret has that name.
    pub fn deleted_secret(&self, vault: &str, name: &str) -> Result<Secret> {
        self.store
            .secrets
            .get(&secret_key(vault, name))?
            .filter(|s| s.deleted.is_some())
            .ok_or_else(|| ArmError::SecretNotFound(name.to_string()))
    }

    /// Recovers a soft-deleted secret with all its versions.
    ///
    /// # Errors
    /// [`ArmError::SecretNotFound`] when no deleted secret has that name.
    pub async fn recover_secret(&self, vault: &str, name: &str) -> Result<Secret> {
        let key = secret_key(vault, name);
        let _guard = self.locks.lock(&key).await;
        let mut s = self.deleted_secret(vault, name)?;
        s.deleted = None;
        self.store.secrets.put(&key, &s)?;
        self.store.flush().await?;
        info!(vault, secret = name, "recovered secret");
        Ok(s)
    }

    /// Purges a soft-deleted secret: every version is gone for good.
    ///
    /// # Errors
    /// [`ArmError::SecretNotFound`] when no deleted secret has that name.
    pub async fn purge_secret(&self, vault: &str, name: &str) -> Result<()> {
        let key = secret_key(vault, name);
        let _guard = self.locks.lock(&key).await;
        self.deleted_secret(vault, name)?;
        let versions = self.store.secrets.scan_prefix(&format!("{key}/"))?;
        self.store.transaction(|tx| {
            for (k, _) in &versions {
                tx.remove(&self.store.secrets, k)?;
            }
            tx.remove(&self.store.secrets, &key)?;
            Ok::<_, ArmError>(())
        })?;
        self.store.flush().await?;
        info!(vault, secret = name, "purged secret");
        Ok(())
    }

    /// Records the HTTPS port serving a vault's data plane.
    ///
    /// # Errors
    /// [`ArmError::ResourceNotFound`], store failures.
    pub async fn set_vault_port(&self, name: &str, port: u16) -> Result<Vault> {
        let _guard = self.locks.lock("vaults").await;
        let mut v = self.vault(name)?;
        if v.port != port {
            v.port = port;
            self.store.vaults.put(&name.to_ascii_lowercase(), &v)?;
            self.store.flush().await?;
            info!(vault = %v.id, uri = %v.vault_uri(), "key vault data plane listening");
        }
        Ok(v)
    }

    /// Deletes a vault's secrets with the vault (resource group deletion).
    ///
    /// # Errors
    /// Store failures.
    pub(crate) fn delete_vault_record(&self, vault: &Vault) -> Result<()> {
        let name = vault.id.name().to_ascii_lowercase();
        let secrets = self.store.secrets.scan_prefix(&format!("{name}/"))?;
        self.store.transaction(|tx| {
            for (k, _) in &secrets {
                tx.remove(&self.store.secrets, k)?;
            }
            tx.remove(&self.store.vaults, &name)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_and_secret_names_follow_key_vault_rules() {
        assert!(validate_vault_name("kv-misim1").is_ok());
        assert!(validate_vault_name("1kv").is_err());
        assert!(validate_vault_name("kv--x").is_err());
        assert!(validate_secret_name("db-password").is_ok());
        assert!(validate_secret_name("db_password").is_err());
    }
}
