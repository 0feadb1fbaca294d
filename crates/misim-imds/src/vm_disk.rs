//! The VM side of the legacy managed-identity VM extension: a directory under the host's data dir that
//! stands in for the VM's disk. The extension keeps each served identity's certificate and private key
//! there, world-readable, next to a settings file like the real extension's
//! `/var/lib/waagent/ManagedIdentity-Settings` — "the credentials used to request tokens are stored on
//! the virtual machine", which is why Azure replaced the extension with IMDS
//! (<https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>).
//! IMDS itself never writes a credential anywhere the VM can read.

use std::path::{Path, PathBuf};

use misim_core::cert;
use serde_json::{json, Value};

use crate::error::AgentError;
use crate::model::{Credential, IdentityKind, VmRecord};

/// Name of the settings directory on the VM (the real Linux extension's
/// `/var/lib/waagent/ManagedIdentity-Settings`).
pub const SETTINGS_DIR: &str = "ManagedIdentity-Settings";

/// File mode of everything the extension writes: readable by anyone on the VM (the migration guide
/// of the module doc: "an attacker who compromises the VM can steal the credentials").
#[cfg(unix)]
const FILE_MODE: u32 = 0o644;
#[cfg(unix)]
const DIR_MODE: u32 = 0o755;

/// The stand-in disk of one VM: `<data_dir>/vm-disks/<vm name>-<8 hex of its resource ID>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmDisk {
    root: PathBuf,
}

impl VmDisk {
    /// The disk of the VM in `record` on a host whose data dir is `data_dir`. The name is readable and
    /// the hash keeps two VMs of the same name (other resource groups) apart.
    pub fn of(data_dir: &Path, record: &VmRecord) -> Self {
        let id = &record.vm.resource_id;
        let hash = cert::sha1_thumbprint_hex(id.key().as_bytes());
        let name: String = id
            .name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        VmDisk {
            root: data_dir
                .join("vm-disks")
                .join(format!("{name}-{}", &hash[..8].to_ascii_lowercase())),
        }
    }

    /// Where the extension keeps the credentials (reported as `extension_credential_path`).
    pub fn settings_dir(&self) -> PathBuf {
        self.root.join(SETTINGS_DIR)
    }

    /// The extension's log file, named in its 500 `unknown` error ("For details see logs in <file
    /// path>", <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>).
    pub fn log_file(&self) -> PathBuf {
        self.root.join("ManagedIdentity-Logs").join("extension.log")
    }

    /// Writes `settings.json` and one `<client id>.pem` (certificate + PKCS#8 private key) per served
    /// identity, replacing whatever the previous run wrote. Blocking file I/O runs off the runtime.
    ///
    /// # Errors
    /// [`AgentError::Disk`] when the files cannot be written, [`AgentError::Task`] when the writer
    /// dies.
    pub async fn write_settings(&self, record: &VmRecord) -> Result<(), AgentError> {
        let dir = self.settings_dir();
        let files = settings_files(record);
        tokio::task::spawn_blocking(move || write_dir(&dir, &files))
            .await
            .map_err(AgentError::Task)?
            .map_err(AgentError::Disk)
    }

    /// Deletes the VM's disk (extension removed or VM removed). Absent is fine.
    ///
    /// # Errors
    /// [`AgentError::Disk`] when the directory exists but cannot be removed, [`AgentError::Task`]
    /// when the remover dies.
    pub async fn remove(&self) -> Result<(), AgentError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(AgentError::Task)?
        .map_err(AgentError::Disk)
    }

    /// Appends one line to the extension's log file (best effort; failures are ignored).
    pub async fn log(&self, line: String) {
        let path = self.log_file();
        let _ = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            writeln!(f, "{line}")
        })
        .await;
    }
}

/// The file names and contents of the settings directory.
fn settings_files(record: &VmRecord) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let identities: Vec<Value> = record
        .identities
        .iter()
        .map(|h| {
            let file = format!("{}.pem", h.identity.client_id.to_ascii_lowercase());
            let credential = h.credential.current();
            files.push((file.clone(), pem(&credential.credential)));
            json!({
                "type": match h.identity.kind {
                    IdentityKind::SystemAssigned => "SystemAssigned",
                    IdentityKind::UserAssigned => "UserAssigned",
                },
                "msiResId": h.identity.msi_res_id.as_str(),
                "clientId": h.identity.client_id,
                "objectId": h.identity.principal_id,
                "tenantId": h.identity.tenant_id,
                "thumbprint": credential.thumbprint,
                "notAfter": credential.credential.not_after,
                "certificateFile": file,
            })
        })
        .collect();
    let os = if record.vm.os_type.eq_ignore_ascii_case("windows") {
        "Windows"
    } else {
        "Linux"
    };
    let (port, tag) = record
        .extension
        .as_ref()
        .map(|e| (e.port, e.force_update_tag.clone()))
        .unwrap_or_default();
    let settings = json!({
        "publisher": "Microsoft.ManagedIdentity",
        "type": format!("ManagedIdentityExtensionFor{os}"),
        "typeHandlerVersion": "1.0",
        "port": port,
        "forceUpdateTag": tag,
        "vmResourceId": record.vm.resource_id.as_str(),
        "identities": identities,
    });
    files.push((
        "settings.json".into(),
        serde_json::to_string_pretty(&settings).unwrap_or_default(),
    ));
    files
}

fn pem(credential: &Credential) -> String {
    cert::to_pem("CERTIFICATE", &credential.certificate_der)
        + &cert::to_pem("PRIVATE KEY", &credential.private_key_pkcs8_der)
}

/// Writes `files` into a fresh sibling directory (`<dir>.new`, synced to disk), then swaps it in for
/// `dir`: the old directory is renamed aside to `<dir>.old`, the new one renamed in, and only then is
/// the old one deleted. At every moment a complete set of credentials exists on disk (in `dir`, or in
/// `<dir>.old` after a crash between the two renames; the next write, e.g. on host start, repairs
/// that). If the second rename fails, the old directory is put back.
fn write_dir(dir: &Path, files: &[(String, String)]) -> std::io::Result<()> {
    let staging = dir.with_extension("new");
    let old = dir.with_extension("old");
    remove_if_present(&staging)?;
    std::fs::create_dir_all(&staging)?;
    for (name, content) in files {
        let path = staging.join(name);
        std::fs::write(&path, content)?;
        set_mode(&path, false)?;
        sync(&path)?;
    }
    set_mode(&staging, true)?;
    sync(&staging)?;
    if let Some(parent) = dir.parent() {
        set_mode(parent, true)?;
    }
    // A leftover from a crash mid-swap: when `dir` is gone it holds the last complete set; either
    // way the fresh set replaces it now.
    remove_if_present(&old)?;
    let had_old = match std::fs::rename(dir, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    if let Err(e) = std::fs::rename(&staging, dir) {
        if had_old {
            let _ = std::fs::rename(&old, dir);
        }
        return Err(e);
    }
    if let Some(parent) = dir.parent() {
        sync(parent)?;
    }
    remove_if_present(&old)
}

fn remove_if_present(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Flushes a file's or directory's contents (directory: its entries) to disk.
#[cfg(unix)]
fn sync(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

#[cfg(not(unix))]
fn sync(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, dir: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if dir { DIR_MODE } else { FILE_MODE };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _dir: bool) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Credential, ExtensionState, HeldIdentity, HostCredential, IdentityRef, SharedCredential,
        VmInfo,
    };
    use misim_core::ResourceId;

    fn record(name: &str, rg: &str) -> VmRecord {
        let id = ResourceId::vm("sub", rg, name).unwrap();
        VmRecord {
            vm: VmInfo {
                resource_id: id.clone(),
                vm_id: String::new(),
                name: name.into(),
                subscription_id: "sub".into(),
                resource_group: rg.into(),
                location: String::new(),
                vm_size: String::new(),
                os_type: "Linux".into(),
                vm_scale_set_name: String::new(),
                tags: Default::default(),
                private_ip_address: String::new(),
                mac_address: String::new(),
            },
            port: 1,
            identities: vec![HeldIdentity {
                identity: IdentityRef {
                    msi_res_id: id,
                    kind: IdentityKind::SystemAssigned,
                    client_id: "Client-1".into(),
                    principal_id: "p".into(),
                    tenant_id: "t".into(),
                },
                credential: SharedCredential::new(HostCredential::new(Credential {
                    certificate_der: vec![1, 2, 3],
                    private_key_pkcs8_der: vec![4, 5, 6],
                    not_after: 9,
                })),
            }],
            extension: Some(ExtensionState {
                port: 50342,
                force_update_tag: "a".into(),
                listen_port: 2,
            }),
            app_service: None,
        }
    }

    #[test]
    fn disks_of_same_named_vms_differ_and_live_under_vm_disks() {
        let a = VmDisk::of(Path::new("/d"), &record("vm1", "rg1"));
        let b = VmDisk::of(Path::new("/d"), &record("vm1", "rg2"));
        assert_ne!(a, b);
        let dir = a.settings_dir();
        assert!(dir.starts_with("/d/vm-disks"));
        assert!(dir.ends_with(SETTINGS_DIR));
        assert!(dir
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("vm1-"));
    }

    #[tokio::test]
    async fn settings_are_world_readable_and_replaced_then_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let rec = record("vm1", "rg1");
        let disk = VmDisk::of(tmp.path(), &rec);
        disk.write_settings(&rec).await.unwrap();
        let pem = std::fs::read_to_string(disk.settings_dir().join("client-1.pem")).unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE") && pem.contains("BEGIN PRIVATE KEY"));
        let settings: Value = serde_json::from_str(
            &std::fs::read_to_string(disk.settings_dir().join("settings.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(settings["port"], 50342);
        assert_eq!(settings["identities"][0]["clientId"], "Client-1");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(disk.settings_dir().join("client-1.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        let mut fewer = rec.clone();
        fewer.identities.clear();
        disk.write_settings(&fewer).await.unwrap();
        assert!(!disk.settings_dir().join("client-1.pem").exists());
        disk.remove().await.unwrap();
        assert!(!disk.settings_dir().exists());
        disk.remove().await.unwrap();
    }

    #[tokio::test]
    async fn rewrite_swaps_via_a_side_directory_and_repairs_a_crash_mid_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let rec = record("vm1", "rg1");
        let disk = VmDisk::of(tmp.path(), &rec);
        let dir = disk.settings_dir();
        disk.write_settings(&rec).await.unwrap();
        disk.write_settings(&rec).await.unwrap();
        assert!(dir.join("client-1.pem").exists());
        assert!(!dir.with_extension("old").exists() && !dir.with_extension("new").exists());

        // A crash between the two renames: the settings dir is aside, the staging dir half-written.
        std::fs::rename(&dir, dir.with_extension("old")).unwrap();
        std::fs::create_dir_all(dir.with_extension("new")).unwrap();
        std::fs::write(dir.with_extension("new").join("junk"), "x").unwrap();
        assert!(dir.with_extension("old").join("client-1.pem").exists());
        disk.write_settings(&rec).await.unwrap();
        assert!(dir.join("client-1.pem").exists() && dir.join("settings.json").exists());
        assert!(!dir.join("junk").exists());
        assert!(!dir.with_extension("old").exists() && !dir.with_extension("new").exists());
    }
}
