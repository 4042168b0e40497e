fn main() -> Result<(), Box<dyn std::error::Error>> {
    protoc_gen_micro_otel::configure().compile(&["proto/user/user.proto"], &["proto"])?;
    Ok(())
}
