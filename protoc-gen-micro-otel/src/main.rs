//! `protoc-gen-micro-otel`: the protoc plugin. Reads a `CodeGeneratorRequest` on stdin and
//! writes a `CodeGeneratorResponse` on stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

use prost::Message;

fn main() -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("protoc-gen-micro-otel: reading stdin: {e}");
        return ExitCode::FAILURE;
    }
    let response = match protoc_gen_micro_otel::respond_encoded(&input) {
        Ok(response) => response,
        Err(e) => {
            eprintln!("protoc-gen-micro-otel: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::io::stdout().write_all(&response.encode_to_vec()) {
        eprintln!("protoc-gen-micro-otel: writing stdout: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
