//! IMDS query strings: parsed once, with duplicate names rejected ("requests with duplicate query
//! parameter names will be rejected",
//! <https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service>).

use std::collections::HashSet;

use crate::error::QueryError;

/// The decoded query parameters of one request, in order, without duplicates.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a raw (URL-encoded) query string.
    ///
    /// # Errors
    /// [`QueryError::Malformed`] when it is not URL-encoded pairs, [`QueryError::Duplicate`] when
    /// a name appears twice.
    pub fn parse(raw: Option<&str>) -> Result<Self, QueryError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.unwrap_or_default()).map_err(QueryError::Malformed)?;
        let mut seen = HashSet::with_capacity(pairs.len());
        if let Some((name, _)) = pairs.iter().find(|(n, _)| !seen.insert(n.as_str())) {
            return Err(QueryError::Duplicate(name.clone()));
        }
        Ok(Query(pairs))
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_values_and_rejects_duplicates() {
        let q = Query::parse(Some(
            "resource=https%3A%2F%2Fvault.azure.net&api-version=2018-02-01",
        ))
        .unwrap();
        assert_eq!(q.get("resource"), Some("https://vault.azure.net"));
        assert_eq!(q.get("client_id"), None);
        assert!(
            matches!(Query::parse(Some("a=1&b=2&a=3")), Err(QueryError::Duplicate(n)) if n == "a")
        );
        assert!(Query::parse(None).unwrap().get("a").is_none());
    }

    #[test]
    fn many_distinct_names_parse_and_a_late_duplicate_is_found() {
        let mut raw: String = (0..20_000).map(|i| format!("p{i}=v&")).collect();
        let q = Query::parse(Some(&raw)).unwrap();
        assert_eq!(q.get("p19999"), Some("v"));
        raw.push_str("p7=again");
        assert!(matches!(Query::parse(Some(&raw)), Err(QueryError::Duplicate(n)) if n == "p7"));
    }
}
