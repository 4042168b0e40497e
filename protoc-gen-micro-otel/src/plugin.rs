//! The protoc plugin protocol: `CodeGeneratorRequest` in, `CodeGeneratorResponse` out.

use prost::Message;
use prost_types::compiler::code_generator_response::{Feature, File};
use prost_types::compiler::{CodeGeneratorRequest, CodeGeneratorResponse};

use crate::error::Error;
use crate::extensions::Extensions;
use crate::generate::generate;
use crate::options::Options;

/// Answers one encoded request, as protoc writes it to the plugin's stdin, reading
/// micro-otel's custom options (such as `(micro_otel.topic)`) from the raw bytes. Fails only
/// if the bytes are not a request; other errors go into the response, where protoc reports
/// them.
pub fn respond_encoded(request: &[u8]) -> Result<CodeGeneratorResponse, Error> {
    let decoded = CodeGeneratorRequest::decode(request)?;
    Ok(match Extensions::from_code_generator_request(request) {
        Ok(extensions) => respond_with(&decoded, &extensions),
        Err(e) => error_response(e),
    })
}

/// Answers one decoded request. Errors go into the response, where protoc reports them.
///
/// Only the packages of the request's `file_to_generate` are written, as protoc-gen-prost
/// does, unless the `include_imports=true` option asks for the imports' packages too.
///
/// prost-types drops extensions when decoding, so custom options are not seen here: use
/// [`respond_encoded`] on protoc's bytes for those.
pub fn respond(request: &CodeGeneratorRequest) -> CodeGeneratorResponse {
    respond_with(request, &Extensions::default())
}

fn error_response(error: Error) -> CodeGeneratorResponse {
    CodeGeneratorResponse {
        supported_features: Some(Feature::Proto3Optional as u64),
        error: Some(error.to_string()),
        ..Default::default()
    }
}

fn respond_with(request: &CodeGeneratorRequest, extensions: &Extensions) -> CodeGeneratorResponse {
    let result = Options::parse(request.parameter()).and_then(|options| {
        generate(
            &request.proto_file,
            extensions,
            &request.file_to_generate,
            &options,
        )
    });
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
