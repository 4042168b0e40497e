// The `have_<tool>` cfgs the example's tests are ignored by when a program is missing.
include!("../../tests/tools.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    detect_tools();
    protoc_gen_micro_otel::configure().compile(&["proto/user/user.proto"], &["proto"])?;
    Ok(())
}
