//! The Microsoft first-party resources every misim tenant knows, the forms SDKs name them in, and
//! the `aud` Entra writes for each form.
//!
//! A resource is named by its application ID URI (with or without trailing slash, any casing), by
//! a per-account host for services that have one (`https://{account}.blob.core.windows.net`,
//! `https://{cluster}.{region}.kusto.windows.net`), or by its application (client) ID. v1
//! (`resource=`) and v2 (`scope=<resource>/.default`) name it the same way. Any other resource gets
//! AADSTS500011 (<https://learn.microsoft.com/entra/identity-platform/reference-error-codes>).
//!
//! `aud`: "In v2.0 tokens, this value is always the client ID of the API. In v1.0 tokens, it can be
//! the client ID or the resource URI used in the request"
//! (<https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference#payload-claims>):
//! a v1 token carries the resource exactly as requested (a real VM token for
//! `resource=https://management.azure.com/` has `"aud": "https://management.azure.com/"`), a v2
//! token carries the resource application's ID.
//!
//! Resource URIs and application IDs: the services' Microsoft Entra authentication pages and
//! <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/services-id-authentication-support>;
//! application IDs as listed in
//! <https://learn.microsoft.com/troubleshoot/entra/entra-id/governance/verify-first-party-apps-sign-in>.

/// Token endpoint flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `/{tenant}/oauth2/token`: `resource=`, string values, iss `https://sts.windows.net/{tid}/`.
    V1,
    /// `/{tenant}/oauth2/v2.0/token`: `scope=<res>/.default`, integer values,
    /// iss `https://login.microsoftonline.com/{tid}/v2.0`.
    V2,
}

/// One first-party resource application.
#[derive(Debug, PartialEq, Eq)]
pub struct FirstPartyResource {
    /// The service's name.
    pub name: &'static str,
    /// Application (client) ID of the resource's service principal; the `aud` of v2 tokens.
    /// `None` where no public source gives it (v2 tokens then carry the URI as requested).
    pub app_id: Option<&'static str>,
    /// Application ID URIs, without trailing slash.
    pub uris: &'static [&'static str],
    /// Host suffixes of per-account resource URIs (`https://{account}{suffix}`), e.g.
    /// `.blob.core.windows.net`.
    pub host_suffixes: &'static [&'static str],
    /// True when the resource accepts v1 access tokens only, so Entra issues v1-shaped tokens from
    /// the v2 endpoint too (Azure Resource Manager,
    /// <https://learn.microsoft.com/entra/identity-platform/access-tokens#token-formats>).
    pub v1_only: bool,
}

const fn res(
    name: &'static str,
    app_id: Option<&'static str>,
    uris: &'static [&'static str],
    host_suffixes: &'static [&'static str],
) -> FirstPartyResource {
    FirstPartyResource {
        name,
        app_id,
        uris,
        host_suffixes,
        v1_only: false,
    }
}

/// The well-known first-party resources.
pub const FIRST_PARTY: &[FirstPartyResource] = &[
    FirstPartyResource {
        name: "Azure Resource Manager",
        app_id: Some("797f4846-ba00-4fd7-ba43-dac1f8f63013"),
        uris: &[
            "https://management.azure.com",
            "https://management.core.windows.net",
        ],
        host_suffixes: &[],
        v1_only: true,
    },
    res(
        "Azure Key Vault",
        Some("cfa8b339-82a2-471a-a3c9-0fc0be7a4093"),
        &["https://vault.azure.net"],
        &[],
    ),
    res(
        "Azure Key Vault Managed HSM",
        None,
        &["https://managedhsm.azure.net"],
        &[],
    ),
    res(
        "Azure Storage",
        Some("e406a681-f3d4-42a8-90b6-c2b029497af1"),
        &["https://storage.azure.com"],
        &[
            ".blob.core.windows.net",
            ".queue.core.windows.net",
            ".table.core.windows.net",
            ".file.core.windows.net",
            ".dfs.core.windows.net",
        ],
    ),
    res(
        "Azure SQL Database",
        Some("022907d3-0f1b-48f7-badc-1ba6abab6d66"),
        &["https://database.windows.net"],
        &[],
    ),
    res(
        "Azure Database for PostgreSQL and MySQL",
        None,
        &["https://ossrdbms-aad.database.windows.net"],
        &[],
    ),
    res(
        "Azure Service Bus",
        Some("80a10ef9-8168-493d-abf9-3297c4ef6e3c"),
        &["https://servicebus.azure.net"],
        &[],
    ),
    res(
        "Azure Event Hubs",
        Some("80369ed6-5f11-4dd9-bef3-692475845e77"),
        &["https://eventhubs.azure.net"],
        &[],
    ),
    res(
        "Azure Cosmos DB",
        Some("a232010e-820c-4083-83bb-3ace5fc29d0b"),
        &["https://cosmos.azure.com"],
        &[".documents.azure.com"],
    ),
    res(
        "Azure AI services (Cognitive Services, Azure OpenAI)",
        Some("7d312290-28c8-473c-a0ed-8e53749b6d6d"),
        &["https://cognitiveservices.azure.com"],
        &[],
    ),
    res(
        "Azure Machine Learning",
        Some("18a66f5f-dbdf-4c17-9dd7-1634712a9cbe"),
        &["https://ml.azure.com"],
        &[],
    ),
    res(
        "Microsoft Graph",
        Some("00000003-0000-0000-c000-000000000000"),
        &["https://graph.microsoft.com"],
        &[],
    ),
    res(
        "Log Analytics",
        Some("ca7f3f0b-7d91-482c-8e09-c5d840d0eac5"),
        &[
            "https://api.loganalytics.io",
            "https://api.loganalytics.azure.com",
        ],
        &[],
    ),
    res("Azure Monitor", None, &["https://monitor.azure.com"], &[]),
    res(
        "Azure Data Explorer",
        Some("2746ea77-4702-4b45-80ca-3c97e680e8b7"),
        &[
            "https://kusto.kusto.windows.net",
            "https://help.kusto.windows.net",
        ],
        &[".kusto.windows.net"],
    ),
    res(
        "Azure Container Registry",
        None,
        &["https://containerregistry.azure.net"],
        &[],
    ),
    res(
        "Azure App Configuration",
        None,
        &["https://azconfig.io", "https://appconfig.azure.com"],
        &[".azconfig.io"],
    ),
    res(
        "Azure Data Lake",
        Some("e9f49c6b-5ce5-44c8-925d-015017e9f7ad"),
        &["https://datalake.azure.net"],
        &[],
    ),
    res(
        "Azure Batch",
        Some("ddbf3205-c6bd-46ae-8127-60eb93363864"),
        &["https://batch.core.windows.net"],
        &[],
    ),
    res(
        "Azure Synapse Analytics",
        None,
        &["https://dev.azuresynapse.net"],
        &[],
    ),
    res(
        "Azure Digital Twins",
        Some("0b07f429-9f4b-4714-9392-cc5e8e80c8b0"),
        &["https://digitaltwins.azure.net"],
        &[],
    ),
    res(
        "Azure SignalR Service and Web PubSub",
        None,
        &["https://signalr.azure.com", "https://webpubsub.azure.com"],
        &[],
    ),
    res(
        "Azure Event Grid",
        None,
        &["https://eventgrid.azure.net"],
        &[],
    ),
    res("Azure Relay", None, &["https://relay.azure.net"], &[]),
    res("Azure Maps", None, &["https://atlas.microsoft.com"], &[]),
    res(
        "Power BI",
        Some("00000009-0000-0000-c000-000000000000"),
        &["https://analysis.windows.net/powerbi/api"],
        &[],
    ),
    res(
        "Azure DevOps",
        Some("499b84ac-1321-427f-aa17-267ca6975798"),
        &["https://app.vssps.visualstudio.com"],
        &[],
    ),
];

/// The host of an `https://` URI without path, query or port, lower-cased; `None` for other
/// schemes or a URI with a path beyond `/`.
fn bare_https_host(resource: &str) -> Option<String> {
    let rest = resource
        .get(..8)
        .filter(|s| s.eq_ignore_ascii_case("https://"))
        .map(|_| &resource[8..])?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '?', '#', ':', '@']) {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// The first-party resource `resource` names (URI with or without trailing slash, per-account
/// host, or application ID; any casing), if any.
pub fn lookup(resource: &str) -> Option<&'static FirstPartyResource> {
    let r = resource.trim_end_matches('/');
    if r.is_empty() {
        return None;
    }
    let host = bare_https_host(resource);
    FIRST_PARTY.iter().find(|f| {
        f.uris.iter().any(|u| u.eq_ignore_ascii_case(r))
            || f.app_id.is_some_and(|id| id.eq_ignore_ascii_case(r))
            || host.as_deref().is_some_and(|h| {
                f.host_suffixes
                    .iter()
                    .any(|s| h.len() > s.len() && h.ends_with(s))
            })
    })
}

/// True when `resource` names a known first-party resource.
pub fn is_known(resource: &str) -> bool {
    lookup(resource).is_some()
}

/// The `aud` Entra writes into a token of `version` for a resource requested as `requested`
/// (`resource=` value, or the scope without `/.default`): v1 the request's value unchanged, v2
/// the resource application's ID.
pub fn audience(requested: &str, version: Version) -> String {
    match (version, lookup(requested).and_then(|f| f.app_id)) {
        (Version::V2, Some(app_id)) => app_id.to_string(),
        _ => requested.to_string(),
    }
}

/// The resource application's ID, if known (it goes into the token's `rh`).
pub fn app_id(requested: &str) -> Option<&'static str> {
    lookup(requested).and_then(|f| f.app_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_one_resource_find_it() {
        for form in [
            "https://vault.azure.net",
            "https://vault.azure.net/",
            "HTTPS://Vault.Azure.NET",
            "cfa8b339-82a2-471a-a3c9-0fc0be7a4093",
        ] {
            assert_eq!(
                lookup(form).map(|f| f.name),
                Some("Azure Key Vault"),
                "{form}"
            );
        }
        for unknown in [
            "https://example.com",
            "https://vault.azure.net.evil.example",
            "https://.vault.azure.net",
            "https://myvault.vault.azure.net",
            "https://acct.blob.core.windows.net/container",
            "",
            "/",
        ] {
            assert!(lookup(unknown).is_none(), "{unknown}");
        }
    }

    #[test]
    fn per_account_hosts_name_their_service() {
        assert_eq!(
            lookup("https://acct.blob.core.windows.net/").map(|f| f.name),
            Some("Azure Storage")
        );
        assert_eq!(
            lookup("https://mycluster.westeurope.kusto.windows.net").map(|f| f.name),
            Some("Azure Data Explorer")
        );
        assert_eq!(
            lookup("https://acct.documents.azure.com:443/"),
            None,
            "ports are not part of an application ID URI"
        );
    }

    #[test]
    fn audience_is_the_request_in_v1_and_the_app_id_in_v2() {
        let arm = "https://management.azure.com/";
        assert_eq!(audience(arm, Version::V1), arm);
        assert_eq!(
            audience("https://graph.microsoft.com", Version::V2),
            "00000003-0000-0000-c000-000000000000"
        );
        assert_eq!(
            audience("https://azconfig.io", Version::V2),
            "https://azconfig.io"
        );
    }

    #[test]
    fn table_entries_are_well_formed() {
        for f in FIRST_PARTY {
            for u in f.uris {
                assert!(u.starts_with("https://") && !u.ends_with('/'), "{u}");
            }
            if let Some(id) = f.app_id {
                assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
            }
        }
    }
}
