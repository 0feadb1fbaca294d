//! `GET /metadata/instance[/path…]`: the VM's compute and network metadata
//! (<https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service>,
//! <https://github.com/Azure/azure-rest-api-specs/blob/ea83a2a3e90ca3f0420e9d0ef55a811523541aba/specification/imds/data-plane/InstanceMetadataService/stable/2023-07-01/imds.json>).
//! All primitives are strings, missing values `""`; a sub-path selects a node (array elements by
//! index); leaves need `format=text`, which answers plain text (non-leaves: one child name a line).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::query::Query;
use super::{json_response, text_response};
use crate::error::{ImdsError, Result};
use crate::model::VmInfo;
use crate::versions;

/// The instance category exists from the first IMDS version on.
const INSTANCE_MINIMUM: &str = "2017-03-01";

/// The full instance document of `vm`.
pub fn document(vm: &VmInfo) -> Value {
    let tags: Vec<String> = vm.tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    let tags_list: Vec<Value> = vm
        .tags
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect();
    json!({
        "compute": {
            "azEnvironment": "AzurePublicCloud",
            "location": vm.location,
            "name": vm.name,
            "offer": "",
            "osType": vm.os_type,
            "placementGroupId": "",
            "platformFaultDomain": "0",
            "platformUpdateDomain": "0",
            "provider": "Microsoft.Compute",
            "publisher": "",
            "resourceGroupName": vm.resource_group,
            "resourceId": vm.resource_id.as_str(),
            "sku": "",
            "subscriptionId": vm.subscription_id,
            "tags": tags.join(";"),
            "tagsList": tags_list,
            "userData": "",
            "version": "",
            "vmId": vm.vm_id,
            "vmScaleSetName": vm.vm_scale_set_name,
            "vmSize": vm.vm_size,
            "zone": "",
        },
        "network": {
            "interface": [{
                "ipv4": {
                    "ipAddress": [{ "privateIpAddress": vm.private_ip_address, "publicIpAddress": "" }],
                    "subnet": [{ "address": "", "prefix": "" }],
                },
                "ipv6": { "ipAddress": [] },
                "macAddress": vm.mac_address,
            }],
        },
    })
}

fn walk<'v>(mut node: &'v Value, path: &[&str]) -> Option<&'v Value> {
    for segment in path {
        node = match node {
            Value::Object(map) => map.get(*segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn is_leaf(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

fn as_text(node: &Value) -> String {
    let child = |name: String, v: &Value| if is_leaf(v) { name } else { format!("{name}/") };
    match node {
        Value::String(s) => s.clone(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| child(k.clone(), v))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| child(i.to_string(), v))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

/// Answers `/metadata/instance/{path}` for `vm`.
///
/// # Errors
/// api-version errors (instance shape), [`ImdsError::InvalidQueryValue`] for a `format` other than
/// `json`/`text`, [`ImdsError::NotFound`] for an unknown path, [`ImdsError::LeafNeedsText`] for a leaf
/// without `format=text` (IMDS doc, see the module doc).
pub fn instance(vm: &VmInfo, path: &[&str], query: &Query) -> Result<Response> {
    versions::check(query.get("api-version"), INSTANCE_MINIMUM)?;
    let text = match query.get("format") {
        None | Some("json") => false,
        Some("text") => true,
        Some(_) => return Err(ImdsError::InvalidQueryValue("format")),
    };
    let doc = document(vm);
    let node = walk(&doc, path).ok_or(ImdsError::NotFound)?;
    match (text, is_leaf(node)) {
        (true, _) => Ok(text_response(as_text(node))),
        (false, true) => Err(ImdsError::LeafNeedsText),
        (false, false) => Ok(json_response(StatusCode::OK, node)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_core::ResourceId;

    fn vm() -> VmInfo {
        VmInfo {
            resource_id: ResourceId::vm("sub", "rg", "vm1").unwrap(),
            vm_id: "11111111-2222-3333-4444-555555555555".into(),
            name: "vm1".into(),
            subscription_id: "sub".into(),
            resource_group: "rg".into(),
            location: "westeurope".into(),
            vm_size: "Standard_D2s_v3".into(),
            os_type: "Linux".into(),
            vm_scale_set_name: String::new(),
            tags: [
                ("env".to_string(), "ci".to_string()),
                ("team".to_string(), "x".to_string()),
            ]
            .into(),
            private_ip_address: "10.0.0.4".into(),
            mac_address: "000D3AF806EC".into(),
        }
    }

    #[test]
    fn document_has_string_primitives_and_tags() {
        let d = document(&vm());
        assert_eq!(d["compute"]["tags"], "env:ci;team:x");
        assert_eq!(d["compute"]["platformFaultDomain"], "0");
        assert_eq!(
            d["network"]["interface"][0]["ipv4"]["ipAddress"][0]["privateIpAddress"],
            "10.0.0.4"
        );
    }

    #[test]
    fn walk_follows_objects_and_array_indices() {
        let d = document(&vm());
        assert_eq!(
            walk(&d, &["compute", "vmId"]),
            Some(&json!("11111111-2222-3333-4444-555555555555"))
        );
        assert_eq!(
            walk(&d, &["network", "interface", "0", "macAddress"]),
            Some(&json!("000D3AF806EC"))
        );
        assert_eq!(walk(&d, &["network", "interface", "1"]), None);
        assert_eq!(walk(&d, &["compute", "nope"]), None);
        assert_eq!(as_text(walk(&d, &["network"]).unwrap()), "interface/");
    }
}
