//! The protoc plugin protocol: `CodeGeneratorRequest` in, `CodeGeneratorResponse` out.

use prost_types::compiler::code_generator_response::{Feature, File};
use prost_types::compiler::{CodeGeneratorRequest, CodeGeneratorResponse};

use crate::generate::generate;
use crate::options::Options;

/// Answers one request. Errors go into the response, where protoc reports them.
///
/// Only the packages of the request's `file_to_generate` are written, as protoc-gen-prost
/// does, unless the `include_imports=true` option asks for the imports' packages too.
pub fn respond(request: &CodeGeneratorRequest) -> CodeGeneratorResponse {
    let result = Options::parse(request.parameter())
        .and_then(|options| generate(&request.proto_file, &request.file_to_generate, &options));
    let mut response = CodeGeneratorResponse {
        supported_features: Some(Feature::Proto3Optional as u64),
        ..Default::default()
    };
    match result {
        Ok(files) => {
            response.file = files
                .into_iter()
                .map(|f| File {
                    name: Some(f.name),
                    content: Some(f.content),
                    ..Default::default()
                })
                .collect();
        }
        Err(e) => response.error = Some(e.to_string()),
    }
    response
}
