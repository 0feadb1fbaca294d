//! `misim ad app …` and `misim ad sp show`: app registrations with app roles and app-role
//! assignments to managed identities, like `az ad app` / `az ad sp` and Microsoft Graph's
//! `appRoleAssignedTo` (<https://learn.microsoft.com/graph/api/resources/application>,
//! <https://learn.microsoft.com/graph/api/resources/approleassignment>,
//! <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-assign-app-role-managed-identity>).
//!
//! In Azure these are Microsoft Graph calls, not ARM calls, so these verbs talk to Azure AD's
//! `misim.aad.v1.Applications` gRPC API directly, with mutual TLS and the admin certificate `misim
//! up` writes (as `misim identity credential export` does with MSRP). Output is Graph's JSON
//! (camelCase), as `az` prints it.

use std::path::Path;

use anyhow::Context;
use misim_proto::aad as pb;
use misim_proto::aad::aad_admin_client::AadAdminClient;
use misim_proto::aad::applications_client::ApplicationsClient;
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::print;
use crate::cli::{AadConn, AdArgs, AdCommand, AppCommand, AppRoleAssignmentCommand, SpCommand};

/// The default endpoint when neither --aad nor an endpoints.json says otherwise.
fn default_aad_grpc() -> String {
    crate::endpoints::default_url(crate::endpoints::AAD_GRPC_OFFSET)
}

/// `--aad`, else `aad_grpc` of `DATA_DIR/endpoints.json` when the certificate directory is
/// `DATA_DIR/ca/admin`, else [`default_aad_grpc`].
fn aad_url(conn: &AadConn) -> String {
    if let Some(url) = &conn.aad {
        return url.clone();
    }
    let from_file = |dir: &Path| -> Option<String> {
        let data_dir = dir.parent()?.parent()?;
        let text = std::fs::read_to_string(data_dir.join("endpoints.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["aad_grpc"].as_str().map(str::to_string)
    };
    from_file(&conn.cert_dir).unwrap_or_else(default_aad_grpc)
}

fn status(url: &str) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
    move |s| match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Unimplemented => {
            anyhow::anyhow!(
                "Azure AD at {url}: {} (is `misim up` running? --aad / MISIM_AAD_GRPC choose the \
                 endpoint: aad_grpc in DATA_DIR/endpoints.json)",
                s.message()
            )
        }
        tonic::Code::NotFound => anyhow::anyhow!("not found: {}", s.message()),
        tonic::Code::InvalidArgument => anyhow::anyhow!("bad request: {}", s.message()),
        _ => anyhow::anyhow!("Azure AD: {}", s.message()),
    }
}

/// Runs one `misim ad` verb and prints its JSON.
///
/// # Errors
/// When the admin certificate cannot be loaded, Azure AD is unreachable or refuses the call; the
/// message is Azure AD's (Graph's error code and text).
pub async fn run(args: AdArgs) -> anyhow::Result<()> {
    let url = aad_url(&args.conn);
    let admin = misim_core::control::ControlTls::load(&args.conn.cert_dir).with_context(|| {
        format!(
            "Azure AD's admin API answers only callers with a misim certificate: cannot load the \
             admin certificate from {} (misim up writes it to DATA_DIR/ca/admin; set --cert-dir or \
             MISIM_ADMIN_CERT_DIR)",
            args.conn.cert_dir.display()
        )
    })?;
    let channel: Channel = admin
        .endpoint(&url)
        .map_err(|e| anyhow::anyhow!(e))?
        .connect()
        .await
        .with_context(|| {
            format!("cannot reach Azure AD at {url} (set --aad or MISIM_AAD_GRPC to aad_grpc)")
        })?;
    let err = status(&url);
    let tenant = match &args.conn.tenant {
        Some(t) => t.clone(),
        None => {
            AadAdminClient::new(channel.clone())
                .ensure_default_tenant(pb::EnsureDefaultTenantRequest {})
                .await
                .map_err(&err)?
                .into_inner()
                .tenant_id
        }
    };
    let mut apps = ApplicationsClient::new(channel);
    let get = |id: String| pb::GetApplicationRequest {
        tenant_id: tenant.clone(),
        id,
    };
    match args.command {
        AdCommand::App { command } => match command {
            AppCommand::Create {
                display_name,
                identifier_uris,
                app_roles,
                requested_access_token_version,
            } => {
                let req = pb::CreateApplicationRequest {
                    tenant_id: tenant.clone(),
                    display_name,
                    identifier_uris,
                    app_roles: app_roles
                        .into_iter()
                        .map(|value| pb::NewAppRole {
                            value,
                            ..Default::default()
                        })
                        .collect(),
                    requested_access_token_version: requested_access_token_version.unwrap_or(0),
                };
                let app = apps.create_application(req).await.map_err(&err)?;
                print(&application(&app.into_inner()));
            }
            AppCommand::Show { id } => {
                let app = apps.get_application(get(id)).await.map_err(&err)?;
                print(&application(&app.into_inner()));
            }
            AppCommand::List => {
                let list = apps
                    .list_applications(pb::ListApplicationsRequest {
                        tenant_id: tenant.clone(),
                    })
                    .await
                    .map_err(&err)?
                    .into_inner();
                print(&Value::Array(
                    list.applications.iter().map(application).collect(),
                ));
            }
            AppCommand::Delete { id } => {
                apps.delete_application(pb::DeleteApplicationRequest {
                    tenant_id: tenant.clone(),
                    id,
                })
                .await
                .map_err(&err)?;
            }
            AppCommand::RoleAssignment { command } => match command {
                AppRoleAssignmentCommand::Create {
                    principal_id,
                    app,
                    role,
                } => {
                    let by_id = uuid_like(&role);
                    let req = pb::CreateAppRoleAssignmentRequest {
                        tenant_id: tenant.clone(),
                        principal_id,
                        app,
                        app_role_id: if by_id { role.clone() } else { String::new() },
                        app_role_value: if by_id { String::new() } else { role },
                    };
                    let a = apps.create_app_role_assignment(req).await.map_err(&err)?;
                    print(&assignment(&a.into_inner()));
                }
                AppRoleAssignmentCommand::List { app, principal_id } => {
                    let list = apps
                        .list_app_role_assignments(pb::ListAppRoleAssignmentsRequest {
                            tenant_id: tenant.clone(),
                            app: app.unwrap_or_default(),
                            principal_id: principal_id.unwrap_or_default(),
                        })
                        .await
                        .map_err(&err)?
                        .into_inner();
                    print(&Value::Array(
                        list.app_role_assignments.iter().map(assignment).collect(),
                    ));
                }
                AppRoleAssignmentCommand::Delete { id } => {
                    apps.delete_app_role_assignment(pb::DeleteAppRoleAssignmentRequest {
                        tenant_id: tenant.clone(),
                        id,
                    })
                    .await
                    .map_err(&err)?;
                }
            },
        },
        AdCommand::Sp {
            command: SpCommand::Show { id },
        } => {
            let app = apps.get_application(get(id)).await.map_err(&err)?;
            print(&service_principal(&app.into_inner()));
        }
    }
    Ok(())
}

/// True for a GUID (8-4-4-4-12 hex digits): `--role` then names the role's ID.
fn uuid_like(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Epoch seconds as Graph's `createdDateTime` (`2024-05-01T12:00:00Z`).
fn graph_time(epoch: i64) -> String {
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-Compatible Low-Level Date
    // Algorithms", days_from_civil inverse).
    let (days, secs) = (epoch.div_euclid(86_400), epoch.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn app_roles(a: &pb::Application) -> Value {
    Value::Array(
        a.app_roles
            .iter()
            .map(|r| {
                json!({
                    "allowedMemberTypes": r.allowed_member_types,
                    "description": r.description,
                    "displayName": r.display_name,
                    "id": r.id,
                    "isEnabled": r.is_enabled,
                    "origin": "Application",
                    "value": r.value,
                })
            })
            .collect(),
    )
}

fn token_version(a: &pb::Application) -> Value {
    match a.requested_access_token_version {
        0 => Value::Null,
        v => v.into(),
    }
}

/// Graph `application` JSON, as `az ad app show` prints it.
fn application(a: &pb::Application) -> Value {
    json!({
        "id": a.object_id,
        "appId": a.app_id,
        "displayName": a.display_name,
        "identifierUris": a.identifier_uris,
        "appRoles": app_roles(a),
        "api": { "requestedAccessTokenVersion": token_version(a) },
        "signInAudience": "AzureADMyOrg",
        "createdDateTime": graph_time(a.created_date_time),
    })
}

/// Graph `servicePrincipal` JSON of an application, as `az ad sp show` prints it.
fn service_principal(a: &pb::Application) -> Value {
    let mut names = vec![a.app_id.clone()];
    names.extend(a.identifier_uris.iter().cloned());
    json!({
        "id": a.service_principal_id,
        "appId": a.app_id,
        "appDisplayName": a.display_name,
        "displayName": a.display_name,
        "appOwnerOrganizationId": a.tenant_id,
        "servicePrincipalType": "Application",
        "servicePrincipalNames": names,
        "accountEnabled": true,
        "appRoleAssignmentRequired": false,
        "appRoles": app_roles(a),
    })
}

/// Graph `appRoleAssignment` JSON.
fn assignment(a: &pb::AppRoleAssignment) -> Value {
    json!({
        "id": a.id,
        "appRoleId": a.app_role_id,
        "principalId": a.principal_id,
        "principalDisplayName": a.principal_display_name,
        "principalType": a.principal_type,
        "resourceId": a.resource_id,
        "resourceDisplayName": a.resource_display_name,
        "createdDateTime": graph_time(a.created_date_time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_time_formats_utc() {
        assert_eq!(graph_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(graph_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(graph_time(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn role_ids_are_told_from_values() {
        assert!(uuid_like("6d3b7a43-4d3d-4c5a-9a53-0d6b7c3c1e11"));
        assert!(!uuid_like("Orders.Read"));
        assert!(!uuid_like("6d3b7a43-4d3d-4c5a-9a53-0d6b7c3c1e1"));
    }

    #[test]
    fn the_endpoint_comes_from_the_data_dir_of_the_certificate() {
        let dir = std::env::temp_dir().join(format!("misim-ad-endpoint-{}", std::process::id()));
        let cert_dir = dir.join("ca").join("admin");
        std::fs::create_dir_all(&cert_dir).unwrap();
        let conn = AadConn {
            aad: None,
            cert_dir: cert_dir.clone(),
            tenant: None,
        };
        assert_eq!(aad_url(&conn), "http://127.0.0.1:7703");
        std::fs::write(
            dir.join("endpoints.json"),
            r#"{"aad_grpc":"http://127.0.0.1:20003"}"#,
        )
        .unwrap();
        assert_eq!(aad_url(&conn), "http://127.0.0.1:20003");
        let explicit = AadConn {
            aad: Some("http://127.0.0.1:1".into()),
            ..conn
        };
        assert_eq!(aad_url(&explicit), "http://127.0.0.1:1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
