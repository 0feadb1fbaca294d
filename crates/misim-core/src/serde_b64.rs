//! Serde helper storing byte blobs (DER keys, certificates) as standard base64 strings
//! (RFC 4648 §4, padded) instead of JSON number arrays. Use as `#[serde(with = "misim_core::serde_b64")]`
//! on a `Vec<u8>` field (<https://serde.rs/field-attrs.html#with>).

use base64::Engine;
use serde::{Deserialize, Deserializer, Serializer};

/// Serializes bytes as a base64 string.
///
/// # Errors
/// Only the serializer's own errors.
pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Deserializes a base64 string into bytes.
///
/// # Errors
/// When the value is not a string or not valid base64.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Blob(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn bytes_round_trip_as_a_base64_string() {
        let json = serde_json::to_string(&Blob(vec![1, 2, 3])).unwrap();
        assert_eq!(json, "\"AQID\"");
        assert_eq!(
            serde_json::from_str::<Blob>(&json).unwrap(),
            Blob(vec![1, 2, 3])
        );
    }

    #[test]
    fn rejects_what_is_not_base64() {
        assert!(serde_json::from_str::<Blob>("\"not base64!\"").is_err());
        assert!(serde_json::from_str::<Blob>("[1,2,3]").is_err());
    }
}
