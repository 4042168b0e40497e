//! The template model: what templates see of a service, with every Rust name decided here.

use std::collections::HashSet;

use heck::{ToShoutySnakeCase, ToSnakeCase};
use prost_build::{Comments, Method, Service};
use serde::Serialize;

use crate::names::{Names, upper_camel};

/// A service as the templates see it.
#[derive(Debug, Serialize)]
pub(crate) struct ServiceModel {
    /// `user.User`
    pub full_name: String,
    /// Doc comment lines (`/// …`), empty if the proto has none.
    pub doc: String,
    /// `UserHandler`
    pub handler: String,
    /// `UserServer`
    pub server: String,
    /// `UserClient`
    pub client: String,
    /// `register_user_handler`
    pub register_fn: String,
    /// `user_methods`
    pub methods_mod: String,
    /// A plausible registry name for docs: `user.service`.
    pub example_target: String,
    /// The methods, in proto order.
    pub methods: Vec<MethodModel>,
}

/// A method as the templates see it.
#[derive(Debug, Serialize)]
pub(crate) struct MethodModel {
    /// `CreateUser`
    pub proto_name: String,
    /// `create_user` (raw identifier if it is a keyword)
    pub name: String,
    /// `CREATE_USER`
    pub const_name: String,
    /// `/user.User/CreateUser`
    pub path: String,
    /// Rust path of the request type, relative to the package module.
    pub input_type: String,
    /// Rust path of the response type.
    pub output_type: String,
    /// `Unary`, `ServerStreaming`, `ClientStreaming` or `BidiStreaming`.
    pub kind: &'static str,
    /// Human words for the kind, for docs.
    pub kind_doc: &'static str,
    /// `Routes` builder method binding it.
    pub route: &'static str,
    /// `Client` method calling it.
    pub call: &'static str,
    /// `request` or `requests`.
    pub request_arg: &'static str,
    /// Whether the client sends a stream.
    pub client_streaming: bool,
    /// Whether the server answers with a stream.
    pub server_streaming: bool,
    /// Whether retrying it is safe (`idempotency_level` is IDEMPOTENT or NO_SIDE_EFFECTS).
    pub idempotent: bool,
    /// Doc comment lines, empty if none.
    pub doc: String,
}

/// Methods the generated client defines itself, which an RPC must not shadow.
const CLIENT_OWN_METHODS: &[&str] = &["new"];

impl ServiceModel {
    /// Builds the model, claiming every top-level name in `names`.
    pub(crate) fn new(
        service: &Service,
        file: &str,
        names: &mut Names,
    ) -> Result<Self, crate::Error> {
        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        let camel = upper_camel(&service.proto_name);
        let snake = service.proto_name.to_snake_case();
        let element = format!("service `{full_name}`");
        let model = Self {
            doc: doc(&service.comments),
            handler: format!("{camel}Handler"),
            server: format!("{camel}Server"),
            client: format!("{camel}Client"),
            register_fn: format!("register_{snake}_handler"),
            methods_mod: format!("{snake}_methods"),
            example_target: format!("{}.service", service.proto_name.to_lowercase()),
            methods: methods(service, &full_name, file)?,
            full_name,
        };
        for name in [
            &model.handler,
            &model.server,
            &model.client,
            &model.register_fn,
            &model.methods_mod,
        ] {
            names
                .claim(&service.package, name, &format!("{element} in {file}"))
                .map_err(|other| crate::Error::NameClash {
                    file: file.into(),
                    element: element.clone(),
                    name: name.clone(),
                    other,
                })?;
        }
        Ok(model)
    }
}

fn methods(
    service: &Service,
    full_name: &str,
    file: &str,
) -> Result<Vec<MethodModel>, crate::Error> {
    let mut seen = HashSet::new();
    let mut consts = HashSet::new();
    service
        .methods
        .iter()
        .map(|m| {
            let model = MethodModel::new(m, full_name);
            let clash = |name: &str, other: String| crate::Error::NameClash {
                file: file.into(),
                element: format!("rpc `{}` of service `{full_name}`", m.proto_name),
                name: name.into(),
                other,
            };
            if !seen.insert(model.name.clone()) {
                return Err(clash(
                    &model.name,
                    "another rpc of the service also uses".into(),
                ));
            }
            if !consts.insert(model.const_name.clone()) {
                return Err(clash(
                    &model.const_name,
                    "another rpc of the service also uses".into(),
                ));
            }
            if CLIENT_OWN_METHODS.contains(&model.name.as_str()) {
                return Err(clash(
                    &model.name,
                    "the generated client's constructor uses".into(),
                ));
            }
            Ok(model)
        })
        .collect()
}

impl MethodModel {
    fn new(method: &Method, service_full_name: &str) -> Self {
        let (kind, kind_doc, route, call) = match (method.client_streaming, method.server_streaming)
        {
            (false, false) => ("Unary", "unary", "unary", "unary"),
            (false, true) => (
                "ServerStreaming",
                "server streaming",
                "server_streaming",
                "server_streaming",
            ),
            (true, false) => (
                "ClientStreaming",
                "client streaming",
                "client_streaming",
                "client_streaming",
            ),
            (true, true) => (
                "BidiStreaming",
                "bidirectional streaming",
                "streaming",
                "streaming",
            ),
        };
        use prost_types::method_options::IdempotencyLevel;
        let idempotent = matches!(
            method.options.idempotency_level(),
            IdempotencyLevel::Idempotent | IdempotencyLevel::NoSideEffects
        );
        Self {
            proto_name: method.proto_name.clone(),
            name: method.name.clone(),
            const_name: method.proto_name.to_shouty_snake_case(),
            path: format!("/{service_full_name}/{}", method.proto_name),
            input_type: method.input_type.clone(),
            output_type: method.output_type.clone(),
            kind,
            kind_doc,
            route,
            call,
            request_arg: if method.client_streaming {
                "requests"
            } else {
                "request"
            },
            client_streaming: method.client_streaming,
            server_streaming: method.server_streaming,
            idempotent,
            doc: doc(&method.comments),
        }
    }
}

/// Proto comments as `///` lines, exactly as prost-build writes them for messages.
fn doc(comments: &Comments) -> String {
    let mut buf = String::new();
    Comments {
        leading_detached: Vec::new(),
        leading: comments.leading.clone(),
        trailing: comments.trailing.clone(),
    }
    .append_with_indent(0, &mut buf);
    buf.trim_end().to_owned()
}
