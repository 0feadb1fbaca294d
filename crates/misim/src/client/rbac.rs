//! Client verbs for role assignments and role definitions.

use misim_proto::arm as pb;
use serde_json::Value;

use super::{print, status, Arm};
use crate::cli::*;
use crate::output;

pub(super) async fn role(arm: &mut Arm, c: RoleCommand) -> anyhow::Result<()> {
    match c {
        RoleCommand::Assignment {
            command:
                RoleAssignmentCommand::Create {
                    assignee_object_id,
                    role,
                    scope,
                },
        } => {
            let scope = match scope {
                Some(scope) => scope,
                None => default_scope(arm).await?,
            };
            let req = pb::CreateRoleAssignmentRequest {
                scope,
                role,
                principal_id: assignee_object_id,
                principal_type: String::new(),
            };
            print(&output::role_assignment(
                &arm.create_role_assignment(req)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ));
        }
        RoleCommand::Assignment {
            command: RoleAssignmentCommand::List { scope, assignee },
        } => {
            let req = pb::ListRoleAssignmentsRequest {
                scope: scope.unwrap_or_default(),
                principal_id: assignee.unwrap_or_default(),
            };
            let list = arm
                .list_role_assignments(req)
                .await
                .map_err(status)?
                .into_inner();
            print(&Value::Array(
                list.role_assignments
                    .iter()
                    .map(output::role_assignment)
                    .collect(),
            ));
        }
        RoleCommand::Assignment {
            command: RoleAssignmentCommand::Delete { ids },
        } => {
            arm.delete_role_assignment(pb::DeleteRoleAssignmentRequest { id: ids })
                .await
                .map_err(status)?;
        }
        RoleCommand::Definition {
            command: RoleDefinitionCommand::List,
        } => {
            let list = arm
                .list_role_definitions(pb::ListRoleDefinitionsRequest::default())
                .await
                .map_err(status)?
                .into_inner();
            print(&Value::Array(
                list.role_definitions
                    .iter()
                    .map(output::role_definition)
                    .collect(),
            ));
        }
    }
    Ok(())
}

/// `/subscriptions/{default subscription}`, the scope `az role assignment create` defaults to.
async fn default_scope(arm: &mut Arm) -> anyhow::Result<String> {
    let sub = arm
        .get_account(pb::GetAccountRequest::default())
        .await
        .map_err(status)?
        .into_inner();
    Ok(sub.id)
}
