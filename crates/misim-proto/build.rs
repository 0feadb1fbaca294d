//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates tonic code.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "misim/arm/v1/arm.proto",
        "misim/msrp/v1/msrp.proto",
        "misim/aad/v1/admin.proto",
        "misim/aad/v1/applications.proto",
        "misim/imds/v1/host.proto",
        "misim/events/v1/events.proto",
        "misim/scenario/v1/scenario.proto",
        "misim/sim/v1/sim.proto",
        "misim/sim/v1/health.proto",
    ];
    // prost-build does not watch the proto folder itself.
    println!("cargo:rerun-if-changed={}", root.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("misim_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
