//! `protoc-gen-micro-otel`: the protoc plugin. Reads a `CodeGeneratorRequest` on stdin and
//! writes a `CodeGeneratorResponse` on stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

use prost::Message;
use prost_types::compiler::CodeGeneratorRequest;

fn main() -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("protoc-gen-micro-otel: reading stdin: {e}");
        return ExitCode::FAILURE;
    }
    let request = match CodeGeneratorRequest::decode(input.as_slice()) {
        Ok(request) => request,
        Err(e) => {
            eprintln!(
                "protoc-gen-micro-otel: {}",
                protoc_gen_micro_otel::Error::from(e)
            );
            return ExitCode::FAILURE;
        }
    };
    let response = protoc_gen_micro_otel::respond(&request);
    if let Err(e) = std::io::stdout().write_all(&response.encode_to_vec()) {
        eprintln!("protoc-gen-micro-otel: writing stdout: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
