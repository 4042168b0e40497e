//! Bad input gives an error naming the file and element, never a panic.

use std::path::Path;

use prost_types::compiler::CodeGeneratorRequest;
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, field_descriptor_proto,
};
use protoc_gen_micro_otel::{Error, configure};

fn generate_one(source: &str) -> Result<Vec<protoc_gen_micro_otel::GeneratedFile>, Error> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.proto"), source).unwrap();
    configure().generate(&["bad.proto"], &[dir.path()])
}

fn message(result: Result<Vec<protoc_gen_micro_otel::GeneratedFile>, Error>) -> String {
    result.expect_err("generation should fail").to_string()
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = message(configure().generate(&["nowhere/missing.proto"], &[dir.path()]));
    assert!(err.contains("nowhere/missing.proto"), "{err}");
}

#[test]
fn a_syntax_error_names_file_and_line() {
    let err = message(generate_one(
        "syntax = \"proto3\";\npackage p;\nmessage {\n",
    ));
    assert!(err.contains("bad.proto:3"), "{err}");
}

#[test]
fn an_unknown_type_is_named() {
    let err = message(generate_one(
        "syntax = \"proto3\";\npackage p;\nservice S { rpc Do(Nope) returns (Nope); }\n",
    ));
    assert!(err.contains("Nope"), "{err}");
}

#[test]
fn a_service_clashing_with_a_message_names_both() {
    let err = message(generate_one(
        "syntax = \"proto3\";\npackage shop;\nmessage CartClient { string id = 1; }\n\
         service Cart { rpc Get(CartClient) returns (CartClient); }\n",
    ));
    assert!(err.contains("bad.proto"), "{err}");
    assert!(err.contains("service `shop.Cart`"), "{err}");
    assert!(err.contains("`CartClient`"), "{err}");
    assert!(err.contains("message `CartClient`"), "{err}");
}

#[test]
fn two_rpcs_with_the_same_rust_name_are_named() {
    let err = message(generate_one(
        "syntax = \"proto3\";\npackage p;\nmessage M {}\n\
         service S { rpc GetUser(M) returns (M); rpc get_user(M) returns (M); }\n",
    ));
    assert!(err.contains("rpc `get_user` of service `p.S`"), "{err}");
    assert!(err.contains("`get_user`"), "{err}");
}

#[test]
fn an_rpc_shadowing_the_client_constructor_is_named() {
    let err = message(generate_one(
        "syntax = \"proto3\";\npackage p;\nmessage M {}\nservice S { rpc New(M) returns (M); }\n",
    ));
    assert!(
        err.contains("rpc `New`") && err.contains("constructor"),
        "{err}"
    );
}

#[test]
fn a_missing_template_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.proto"),
        "syntax = \"proto3\";\npackage p;\n",
    )
    .unwrap();
    let err = message(
        configure()
            .templates("/no/such/templates")
            .generate(&["a.proto"], &[dir.path()]),
    );
    assert!(err.contains("/no/such/templates"), "{err}");
}

#[test]
fn a_broken_custom_template_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(
        templates.join("client.rs.tera"),
        "{{ service.no_such_field }}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.proto"),
        "syntax = \"proto3\";\npackage p;\nmessage M {}\nservice S { rpc Do(M) returns (M); }\n",
    )
    .unwrap();
    let err = message(
        configure()
            .templates(&templates)
            .generate(&["a.proto"], &[dir.path()]),
    );
    assert!(
        err.contains("template") && err.contains("no_such_field"),
        "{err}"
    );
}

#[test]
fn a_custom_template_replaces_the_embedded_one_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(
        templates.join("client.rs.tera"),
        "/// Custom client for `{{ service.full_name }}`.\npub struct Custom;\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.proto"),
        "syntax = \"proto3\";\npackage p;\nmessage M {}\nservice S { rpc Do(M) returns (M); }\n",
    )
    .unwrap();
    let files = configure()
        .templates(&templates)
        .generate(&["a.proto"], &[dir.path()])
        .unwrap();
    let code = &files[0].content;
    assert!(
        code.contains("/// Custom client for `p.S`.\npub struct Custom;"),
        "{code}"
    );
    assert!(!code.contains("pub struct SClient"), "{code}");
    assert!(
        code.contains("pub trait SHandler"),
        "other templates stay embedded"
    );
}

#[test]
fn an_incomplete_plugin_request_is_an_error_not_a_panic() {
    // A field typed with a message that is in no file of the request.
    let file = FileDescriptorProto {
        name: Some("lonely.proto".into()),
        package: Some("p".into()),
        syntax: Some("proto3".into()),
        message_type: vec![DescriptorProto {
            name: Some("M".into()),
            field: vec![FieldDescriptorProto {
                name: Some("other".into()),
                number: Some(1),
                label: Some(field_descriptor_proto::Label::Optional as i32),
                r#type: Some(field_descriptor_proto::Type::Message as i32),
                type_name: Some(".q.Missing".into()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let request = CodeGeneratorRequest {
        file_to_generate: vec!["lonely.proto".into()],
        proto_file: vec![file],
        ..Default::default()
    };
    let response = std::panic::catch_unwind(|| protoc_gen_micro_otel::respond(&request))
        .expect("respond must not panic");
    let error = response.error.expect("an error in the response");
    assert!(error.contains("incomplete"), "{error}");
}

#[test]
fn compile_writes_files_and_rerun_hints() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::write(
        dir.path().join("a.proto"),
        "syntax = \"proto3\";\npackage p;\nmessage M {}\nservice S { rpc Do(M) returns (M); }\n",
    )
    .unwrap();
    configure()
        .out_dir(&out)
        .include_file("mod.rs")
        .compile(&["a.proto"], &[dir.path()])
        .unwrap();
    assert!(Path::new(&out.join("p.rs")).exists());
    assert!(
        std::fs::read_to_string(out.join("mod.rs"))
            .unwrap()
            .contains("include!(\"p.rs\")")
    );
}
