//! IMDS api-versions: the list IMDS knows and the per-category minimum. Sources: the IMDS doc
//! <https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service>, the IMDS REST spec
//! <https://github.com/Azure/azure-rest-api-specs/blob/ea83a2a3e90ca3f0420e9d0ef55a811523541aba/specification/imds/data-plane/InstanceMetadataService/stable/2023-07-01/imds.json>
//! and the token how-to <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>.

/// Every api-version IMDS accepts, oldest first (the IMDS doc's list plus the 2023-07-01 REST spec version).
pub const KNOWN: &[&str] = &[
    "2017-03-01",
    "2017-04-02",
    "2017-08-01",
    "2017-10-01",
    "2017-12-01",
    "2018-02-01",
    "2018-04-02",
    "2018-10-01",
    "2019-02-01",
    "2019-03-11",
    "2019-04-30",
    "2019-06-01",
    "2019-06-04",
    "2019-08-01",
    "2019-08-15",
    "2019-11-01",
    "2020-06-01",
    "2020-07-15",
    "2020-09-01",
    "2020-10-01",
    "2020-12-01",
    "2021-01-01",
    "2021-02-01",
    "2021-03-01",
    "2021-05-01",
    "2021-08-01",
    "2021-10-01",
    "2021-11-01",
    "2021-11-15",
    "2021-12-13",
    "2023-07-01",
];

/// The first api-version with the identity category ("use 2018-02-01 or greater", token how-to).
pub const IDENTITY_MINIMUM: &str = "2018-02-01";

/// The `n` newest versions, newest first (the `newest-versions` field of instance errors, IMDS doc).
pub fn newest(n: usize) -> Vec<&'static str> {
    KNOWN.iter().rev().take(n).copied().collect()
}

/// Why an api-version was refused (mapped to [`crate::error::ImdsError`] and its IMDS body there).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiVersionError {
    /// No `api-version` query parameter, or an empty one.
    #[error("api-version was not specified")]
    Missing,
    /// Unknown, or older than the category's minimum (holds the value given).
    #[error("api-version {0} is invalid")]
    Invalid(String),
}

/// Checks `api_version` (as given in the query) against the known list and `minimum`.
///
/// # Errors
/// [`ApiVersionError::Missing`] when absent or empty, [`ApiVersionError::Invalid`] when unknown or
/// older than `minimum` (ISO dates compare lexicographically).
pub fn check(api_version: Option<&str>, minimum: &str) -> Result<(), ApiVersionError> {
    let v = api_version
        .filter(|v| !v.is_empty())
        .ok_or(ApiVersionError::Missing)?;
    if KNOWN.contains(&v) && v >= minimum {
        Ok(())
    } else {
        Err(ApiVersionError::Invalid(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_needs_a_known_version_from_2018_02_01() {
        assert!(check(Some("2018-02-01"), IDENTITY_MINIMUM).is_ok());
        assert!(check(Some("2019-08-01"), IDENTITY_MINIMUM).is_ok());
        assert!(matches!(
            check(Some("2017-12-01"), IDENTITY_MINIMUM),
            Err(ApiVersionError::Invalid(_))
        ));
        assert!(matches!(
            check(Some("2018-02-02"), IDENTITY_MINIMUM),
            Err(ApiVersionError::Invalid(_))
        ));
        assert!(matches!(
            check(None, IDENTITY_MINIMUM),
            Err(ApiVersionError::Missing)
        ));
        assert!(matches!(
            check(Some(""), IDENTITY_MINIMUM),
            Err(ApiVersionError::Missing)
        ));
    }

    #[test]
    fn newest_lists_latest_first() {
        assert_eq!(newest(2), vec!["2023-07-01", "2021-12-13"]);
    }
}
