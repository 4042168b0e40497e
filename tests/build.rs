//! Generates plain tonic code (tonic-prost-build) for the benchmark's baseline, from the same
//! protos micro-otel generates from: the user service and the echo service.
//! It also sets the `have_<tool>` cfgs that ignore tests whose outside program is missing
//! (`tools.rs`).

include!("tools.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["golden/user/user.proto", "golden/rpc_kinds/echo.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["golden/user", "golden/rpc_kinds"])?;
    tonic_prost_build::configure().compile_fds(fds)?;

    detect_tools();
    Ok(())
}
