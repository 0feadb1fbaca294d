//! Scenarios: YAML (or JSON) documents of steps with expectations, run against a running misim
//! (`misim scenario run FILE… [--embedded] [--junit OUT.xml] [--json]`). The format is in
//! docs/scenarios.md and its JSON Schema in docs/scenario.schema.json ([`model::schema_json`]).

pub mod cli;
pub mod grpc;
pub mod model;
pub mod runner;

pub use model::{parse, schema_json, Scenario};
pub use runner::{Runner, ScenarioResult, StepResult, Target};

/// The misim binary that `misim` steps run: MISIM_BIN, else this executable.
pub fn misim_bin() -> std::path::PathBuf {
    std::env::var_os("MISIM_BIN")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| std::path::PathBuf::from("misim"))
}
