//! Client verbs for the Key Vault-like data-plane service (vaults and secrets).

use misim_proto::arm as pb;

use super::{print, status, Arm};
use crate::cli::*;
use crate::output;

pub(super) async fn keyvault(arm: &mut Arm, c: KeyvaultCommand) -> anyhow::Result<()> {
    match c {
        KeyvaultCommand::Create { vault, location } => {
            let req = pb::CreateVaultRequest {
                resource_group: vault.resource_group,
                name: vault.name,
                location: location.unwrap_or_default(),
                ..Default::default()
            };
            print(&output::vault(
                &arm.create_vault(req).await.map_err(status)?.into_inner(),
            ));
        }
        KeyvaultCommand::Secret {
            command:
                SecretCommand::Set {
                    vault_name,
                    name,
                    value,
                },
        } => {
            let req = pb::SetSecretRequest {
                vault_name,
                name,
                value,
            };
            print(&output::secret(
                &arm.set_secret(req).await.map_err(status)?.into_inner(),
            ));
        }
    }
    Ok(())
}
