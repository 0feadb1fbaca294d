//! IMDS query strings: parsed once, with duplicate names rejected ("requests with duplicate query
//! parameter names will be rejected", S2).

use crate::error::{ImdsError, Result};

/// The decoded query parameters of one request, in order, without duplicates.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a raw (URL-encoded) query string.
    ///
    /// # Errors
    /// [`ImdsError::DuplicateQuery`] when a name appears twice.
    pub fn parse(raw: Option<&str>) -> Result<Self> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
            .map_err(|_| ImdsError::InvalidQueryValue("query"))?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ImdsError::DuplicateQuery(name.clone()));
            }
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
            matches!(Query::parse(Some("a=1&b=2&a=3")), Err(ImdsError::DuplicateQuery(n)) if n == "a")
        );
        assert!(Query::parse(None).unwrap().get("a").is_none());
    }
}
