//! Request bodies of the REST surface: the `identity` block (with `{}`/`null` values kept apart, as
//! ARM's PATCH semantics need), location, tags, `sku.capacity` and role-assignment properties.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{ArmError, Result};
use crate::identity_spec::IdentityRequest;

/// Parses a JSON body; an empty body is `{}`.
///
/// # Errors
/// [`ArmError::InvalidArgument`] (ARM answers 400 `InvalidRequestContent`-like) for bad JSON.
pub fn parse(bytes: &[u8]) -> Result<Value> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Value::Object(Default::default()));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        ArmError::InvalidArgument(format!(
            "The request content was invalid and could not be deserialized: '{e}'."
        ))
    })?;
    if !v.is_object() {
        return Err(ArmError::InvalidArgument(
            "The request content must be a JSON object.".into(),
        ));
    }
    Ok(v)
}

/// The `identity` block, `None` when absent or null.
///
/// # Errors
/// [`ArmError::InvalidArgument`] when it is not shaped as ARM expects.
pub fn identity(body: &Value) -> Result<Option<IdentityRequest>> {
    let Some(block) = body.get("identity").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = |what: &str| ArmError::InvalidArgument(format!("The identity property {what}."));
    let obj = block.as_object().ok_or_else(|| bad("must be an object"))?;
    let kind = match obj.get("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("'type' must be a string")),
    };
    let user_assigned = match obj.get("userAssignedIdentities") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(
            m.iter()
                .map(|(k, v)| match v {
                    Value::Null => Ok((k.clone(), false)),
                    Value::Object(_) => Ok((k.clone(), true)),
                    _ => Err(bad("'userAssignedIdentities' values must be {} or null")),
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        Some(_) => return Err(bad("'userAssignedIdentities' must be an object")),
    };
    let identity_ids = match obj.get("identityIds") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| bad("'identityIds' must be strings"))
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        Some(_) => return Err(bad("'identityIds' must be an array")),
    };
    Ok(Some(IdentityRequest {
        kind,
        user_assigned,
        identity_ids,
    }))
}

/// `location` (empty when absent).
pub fn location(body: &Value) -> String {
    body["location"].as_str().unwrap_or_default().to_string()
}

/// `tags`, `None` when absent.
pub fn tags(body: &Value) -> Option<BTreeMap<String, String>> {
    body.get("tags")?.as_object().map(|m| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect()
    })
}

/// `sku.capacity`, `None` when absent.
///
/// # Errors
/// [`ArmError::InvalidArgument`] when it is not a non-negative integer.
pub fn capacity(body: &Value) -> Result<Option<u32>> {
    match body.get("sku").and_then(|s| s.get("capacity")) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                ArmError::InvalidArgument(format!(
                    "The value '{v}' of parameter 'sku.capacity' is invalid."
                ))
            }),
    }
}

/// A string under `properties`, empty when absent.
pub fn property<'a>(body: &'a Value, name: &str) -> &'a str {
    body["properties"][name].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_block_keeps_empty_objects_and_nulls_apart() {
        let b = parse(
            br#"{"identity":{"type":"UserAssigned","userAssignedIdentities":{"/a":{},"/b":null}}}"#,
        )
        .unwrap();
        let i = identity(&b).unwrap().unwrap();
        assert_eq!(i.kind.as_deref(), Some("UserAssigned"));
        assert_eq!(
            i.user_assigned.unwrap(),
            vec![("/a".to_string(), true), ("/b".to_string(), false)]
        );
        assert!(identity(&parse(b"").unwrap()).unwrap().is_none());
        assert!(parse(b"[1]").is_err());
    }
}
