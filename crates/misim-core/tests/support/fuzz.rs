//! Property-based fuzzing helpers shared by every crate's `tests/fuzz_*.rs` (included with
//! `#[path = "../../misim-core/tests/support/fuzz.rs"] mod fuzz;`): seed mutation, the characters
//! edits insert, and JSON values. docs/reliability.md describes the targets.

// Each fuzz target uses the helpers it needs.
#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::Value;

/// One edit of a seed: `(position, operation, character)`.
pub type Edit = (usize, u8, char);

/// Applies `edits` to `seed`, on characters (never splitting one): insert, delete or replace the
/// character at the position (modulo the length), or cut the tail there (truncated requests).
pub fn mutate(seed: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for (pos, op, c) in edits {
        let at = if chars.is_empty() {
            0
        } else {
            pos % (chars.len() + 1)
        };
        match op % 4 {
            0 => chars.insert(at, *c),
            1 if at < chars.len() => {
                chars.remove(at);
            }
            2 if at < chars.len() => chars[at] = *c,
            _ => chars.truncate(at),
        }
    }
    chars.into_iter().collect()
}

/// A character edits insert: one of `special` (the target's delimiters and troublemakers), or any
/// character at all as often as each special one.
pub fn fuzz_char(special: &'static [char]) -> impl Strategy<Value = char> + Clone {
    let weight = u32::try_from(special.len()).unwrap_or(u32::MAX);
    prop_oneof![
        weight => proptest::sample::select(special),
        1 => any::<char>(),
    ]
}

/// Between `len.start` and `len.end - 1` edits with characters from [`fuzz_char`].
pub fn edits(
    special: &'static [char],
    len: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), fuzz_char(special)), len)
}

/// JSON values up to three levels deep: null, booleans, numbers, short strings or one of `words`;
/// arrays; objects whose keys are one of `keys` or short strings.
pub fn json_value(
    words: &'static [&'static str],
    keys: &'static [&'static str],
) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        ".{0,12}".prop_map(Value::String),
        proptest::sample::select(words).prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    proptest::sample::select(keys).prop_map(str::to_string),
                    ".{0,6}".prop_map(|s| s)
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The runtime a fuzz target's servers run on for the whole test binary (two worker threads;
/// proptest cases call into it with `block_on`).
///
/// # Panics
/// When the runtime cannot be built (a test setup failure).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A temporary directory that lives as long as the test binary (the servers' data directories).
///
/// # Panics
/// When no temporary directory can be made (a test setup failure).
pub fn data_dir() -> &'static std::path::Path {
    Box::leak(Box::new(tempfile::tempdir().expect("temporary directory"))).path()
}
