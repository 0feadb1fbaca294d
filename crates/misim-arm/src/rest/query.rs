//! Query strings of the REST surface: percent-decoded parameters, `$filter` clauses of the forms the
//! Azure SDKs and the CLI send (`name eq 'v'` joined by `and`, `atScope()`, `assignedTo('id')`), and
//! `$top`/`$skiptoken` paging with absolute `nextLink`s.

use serde_json::{json, Value};

/// The query's `name=value` pairs, percent- and `+`-decoded as browsers and the Azure SDKs encode
/// them (`application/x-www-form-urlencoded` parsing, <https://url.spec.whatwg.org/#urlencoded-parsing>,
/// by the `url` crate's `form_urlencoded`, the parser under axum's `Query`). Invalid escapes stay
/// as written; invalid UTF-8 becomes U+FFFD.
pub fn pairs(query: &str) -> Vec<(String, String)> {
    let Ok(mut url) = reqwest::Url::parse("http://localhost/") else {
        return Vec::new();
    };
    url.set_query(Some(query));
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The decoded value of the first query parameter `name` (case-insensitive), if present.
pub fn param(query: &str, name: &str) -> Option<String> {
    pairs(query)
        .into_iter()
        .find_map(|(k, v)| k.eq_ignore_ascii_case(name).then_some(v))
}

/// One `$filter` clause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clause {
    /// `{field} eq '{value}'`.
    Eq(String, String),
    /// `atScope()`.
    AtScope,
    /// `assignedTo('{id}')`.
    AssignedTo(String),
}

/// Parses `$filter` into clauses joined by `and`.
///
/// # Errors
/// A message naming the clause that is not understood.
pub fn filter(query: &str) -> Result<Vec<Clause>, String> {
    let Some(f) = param(query, "$filter") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for part in split_and(&f) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        if part.eq_ignore_ascii_case("atScope()") {
            out.push(Clause::AtScope);
            continue;
        }
        if let Some(rest) = part
            .get(..11)
            .filter(|p| p.eq_ignore_ascii_case("assignedTo("))
            .and(part.get(11..))
        {
            let id = rest.trim_end_matches(')').trim().trim_matches('\'');
            out.push(Clause::AssignedTo(id.to_string()));
            continue;
        }
        let mut words = part.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some(field), Some(op), Some(value))
                if op.eq_ignore_ascii_case("eq")
                    && value.trim().starts_with('\'')
                    && value.trim().ends_with('\'')
                    && value.trim().len() >= 2 =>
            {
                let v = value.trim();
                out.push(Clause::Eq(
                    field.to_string(),
                    v[1..v.len() - 1].replace("''", "'"),
                ));
            }
            _ => return Err(format!("Invalid $filter clause '{part}'.")),
        }
    }
    Ok(out)
}

/// Splits on ` and ` outside quotes, any case.
fn split_and(f: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let chars: Vec<char> = f.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            quoted = !quoted;
        }
        if !quoted && c == ' ' {
            let word: String = chars[i..].iter().take(5).collect();
            if word.eq_ignore_ascii_case(" and ") {
                parts.push(std::mem::take(&mut cur));
                i += 5;
                continue;
            }
        }
        cur.push(c);
        i += 1;
    }
    parts.push(cur);
    parts
}

/// The value of an `eq` clause on `field` (case-insensitive field name).
pub fn eq<'a>(clauses: &'a [Clause], field: &str) -> Option<&'a str> {
    clauses.iter().find_map(|c| match c {
        Clause::Eq(f, v) if f.eq_ignore_ascii_case(field) => Some(v.as_str()),
        _ => None,
    })
}

/// One page of `items` as ARM returns it: `{"value":[…]}` plus a `nextLink` (the request's own URL
/// with `$skiptoken` set) when `$top` cut the list.
///
/// # Errors
/// A message when `$top` or `$skiptoken` is not a number.
pub fn page(items: Vec<Value>, base: &str, path: &str, query: &str) -> Result<Value, String> {
    let top = match param(query, "$top") {
        Some(t) => Some(
            t.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("The value '{t}' of query parameter '$top' is invalid."))?,
        ),
        None => None,
    };
    let skip = match param(query, "$skiptoken") {
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| format!("The value '{t}' of query parameter '$skiptoken' is invalid."))?,
        None => 0,
    };
    let total = items.len();
    let take = top.unwrap_or(usize::MAX);
    let value: Vec<Value> = items.into_iter().skip(skip).take(take).collect();
    let mut body = json!({ "value": value });
    let next = skip.saturating_add(take);
    if top.is_some() && next < total {
        // The client's own parameters as it encoded them, less `$skiptoken`.
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| {
                !kv.is_empty()
                    && !pairs(kv)
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("$skiptoken"))
            })
            .collect();
        body["nextLink"] = json!(format!(
            "{base}{path}?{}&%24skiptoken={next}",
            kept.join("&")
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_as_the_sdks_send_them() {
        let q = "api-version=2021-04-01&%24filter=resourceGroup%20eq%20%27rg1%27%20and%20resourceType%20eq%20%27Microsoft.Compute%2FvirtualMachines%27";
        let f = filter(q).unwrap();
        assert_eq!(eq(&f, "resourcegroup"), Some("rg1"));
        assert_eq!(
            eq(&f, "resourceType"),
            Some("Microsoft.Compute/virtualMachines")
        );
        assert_eq!(
            filter("$filter=atScope() and assignedTo('abc')").unwrap(),
            vec![Clause::AtScope, Clause::AssignedTo("abc".into())]
        );
        assert_eq!(
            filter("$filter=roleName eq 'Key Vault Secrets User'").unwrap(),
            vec![Clause::Eq(
                "roleName".into(),
                "Key Vault Secrets User".into()
            )]
        );
        assert!(filter("$filter=name ne 'x'").is_err());
        assert_eq!(param("x=a%2", "x").as_deref(), Some("a%2"));
        assert_eq!(param("X=a+b%26c", "x").as_deref(), Some("a b&c"));
        assert_eq!(
            param("%61pi-version=1", "api-version").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn pages_link_to_the_next_with_a_skiptoken() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let p = page(items.clone(), "https://h", "/x", "api-version=1&$top=2").unwrap();
        assert_eq!(p["value"], json!([0, 1]));
        assert_eq!(
            p["nextLink"],
            "https://h/x?api-version=1&$top=2&%24skiptoken=2"
        );
        let p = page(
            items.clone(),
            "https://h",
            "/x",
            "api-version=1&$top=2&%24skiptoken=4",
        )
        .unwrap();
        assert_eq!(p["value"], json!([4]));
        assert!(p.get("nextLink").is_none());
        assert_eq!(
            page(items, "", "/x", "").unwrap()["value"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
    }
}
