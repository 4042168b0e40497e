//! The template model: what templates see of a service, with every Rust name decided here.

use std::collections::{HashMap, HashSet};

use heck::{ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};
use prost_build::{Comments, Method, Service};
use prost_types::source_code_info::Location;
use prost_types::{DescriptorProto, FileDescriptorProto};
use serde::Serialize;

use crate::extensions::Extensions;
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
    /// The registry name the proto gives the service (`(micro_otel.service_name)`) as a
    /// Rust string literal: what the generated client targets by default.
    pub registry_name_literal: Option<String>,
    /// A registry name for docs, escaped as in a Rust string: the one the proto gives, else
    /// a plausible one (`user.service`).
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
    /// `unary`, `server_streaming`, `client_streaming` or `streaming`: the name of both the
    /// `DispatchBuilder` method binding it and the `Client` method calling it.
    pub kind_fn: &'static str,
    /// `request` or `requests`.
    pub request_arg: &'static str,
    /// Whether the client sends a stream.
    pub client_streaming: bool,
    /// Whether the server answers with a stream.
    pub server_streaming: bool,
    /// Whether retrying it is safe: `idempotency_level` is IDEMPOTENT or NO_SIDE_EFFECTS, or
    /// `(micro_otel.idempotent) = true`.
    pub idempotent: bool,
    /// Doc comment lines, empty if none.
    pub doc: String,
}

/// Methods the generated client defines itself, which an RPC must not shadow.
const CLIENT_OWN_METHODS: &[&str] = &["new", "from_registry"];

impl ServiceModel {
    /// Builds the model, claiming every top-level name in `names`.
    pub(crate) fn new(
        service: &Service,
        file: &str,
        extensions: &Extensions,
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
        let registry_name = extensions.service_name(&full_name);
        if registry_name.is_some_and(|name| name.trim().is_empty()) {
            return Err(crate::Error::Descriptor {
                file: file.into(),
                message: format!("(micro_otel.service_name) of {element} is empty"),
            });
        }
        let model = Self {
            doc: doc(&service.comments),
            handler: format!("{camel}Handler"),
            server: format!("{camel}Server"),
            client: format!("{camel}Client"),
            register_fn: format!("register_{snake}_handler"),
            methods_mod: format!("{snake}_methods"),
            registry_name_literal: registry_name.map(|name| format!("{name:?}")),
            example_target: registry_name.map_or_else(
                || format!("{}.service", service.proto_name.to_lowercase()),
                |name| name.escape_default().to_string(),
            ),
            methods: methods(service, &full_name, file, extensions)?,
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
    extensions: &Extensions,
) -> Result<Vec<MethodModel>, crate::Error> {
    let mut seen = HashSet::new();
    let mut consts = HashSet::new();
    service
        .methods
        .iter()
        .map(|m| {
            let idempotent_option =
                extensions.idempotent(&format!("{full_name}.{}", m.proto_name)) == Some(true);
            let model = MethodModel::new(m, full_name, idempotent_option);
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
                    "the generated client's constructors use".into(),
                ));
            }
            Ok(model)
        })
        .collect()
}

impl MethodModel {
    /// `idempotent_option`: whether `(micro_otel.idempotent) = true` is set on the method.
    fn new(method: &Method, service_full_name: &str, idempotent_option: bool) -> Self {
        let (kind, kind_doc, kind_fn) = match (method.client_streaming, method.server_streaming) {
            (false, false) => ("Unary", "unary", "unary"),
            (false, true) => ("ServerStreaming", "server streaming", "server_streaming"),
            (true, false) => ("ClientStreaming", "client streaming", "client_streaming"),
            (true, true) => ("BidiStreaming", "bidirectional streaming", "streaming"),
        };
        use prost_types::method_options::IdempotencyLevel;
        let idempotent = idempotent_option
            || matches!(
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
            kind_fn,
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

/// A message with a `(micro_otel.topic)` option, as the topic template sees it.
#[derive(Debug, Serialize)]
pub(crate) struct TopicModel {
    /// `user.UserCreatedEvent`
    pub full_name: String,
    /// Rust path of the message type, relative to the package module: `UserCreatedEvent`,
    /// or `order::Shipped` for a nested message.
    pub message: String,
    /// The topic for docs, escaped as in a Rust string: `user.created`.
    pub topic: String,
    /// The topic as a Rust string literal: `"user.created"`.
    pub topic_literal: String,
    /// `USER_CREATED_EVENT_TOPIC` (`ORDER_SHIPPED_TOPIC` for `Order.Shipped`).
    pub const_name: String,
    /// `user_created_event_publisher`
    pub publisher_fn: String,
    /// `subscribe_user_created_event`
    pub subscribe_fn: String,
    /// Doc comment lines of the message, empty if the proto has none.
    pub doc: String,
}

impl TopicModel {
    /// The messages of `file` (nested ones included, depth first in proto order) that have a
    /// topic, claiming the names of their helpers in `names`.
    pub(crate) fn of_file(
        file: &FileDescriptorProto,
        extensions: &Extensions,
        names: &mut Names,
    ) -> Result<Vec<Self>, crate::Error> {
        let locations: HashMap<&[i32], &Location> = file
            .source_code_info
            .iter()
            .flat_map(|info| &info.location)
            .map(|l| (l.path.as_slice(), l))
            .collect();
        let mut found = Vec::new();
        let walk = Walk {
            file,
            extensions,
            locations: &locations,
        };
        // 4: FileDescriptorProto.message_type
        walk.messages(&file.message_type, &[4], &[], &[], &mut found);
        for topic in &found {
            let element = format!("message `{}`", topic.full_name);
            for name in [&topic.const_name, &topic.publisher_fn, &topic.subscribe_fn] {
                names
                    .claim(
                        file.package(),
                        name,
                        &format!("the topic helpers of {element} in {}", file.name()),
                    )
                    .map_err(|other| crate::Error::NameClash {
                        file: file.name().into(),
                        element: element.clone(),
                        name: name.clone(),
                        other,
                    })?;
            }
            if topic.topic_literal == "\"\"" {
                return Err(crate::Error::Descriptor {
                    file: file.name().into(),
                    message: format!("(micro_otel.topic) of {element} is empty"),
                });
            }
        }
        Ok(found)
    }
}

/// A walk over a file's messages, looking for topics.
struct Walk<'a> {
    file: &'a FileDescriptorProto,
    extensions: &'a Extensions,
    locations: &'a HashMap<&'a [i32], &'a Location>,
}

impl Walk<'_> {
    /// `messages` at source path `path`, nested in the messages named `scope` (proto names)
    /// whose Rust modules are `modules`.
    fn messages(
        &self,
        messages: &[DescriptorProto],
        path: &[i32],
        scope: &[&str],
        modules: &[String],
        found: &mut Vec<TopicModel>,
    ) {
        for (index, message) in messages.iter().enumerate() {
            let path = [path, &[index as i32]].concat();
            let names: Vec<&str> = scope.iter().copied().chain([message.name()]).collect();
            let proto_name = names.join(".");
            let full_name = if self.file.package().is_empty() {
                proto_name
            } else {
                format!("{}.{proto_name}", self.file.package())
            };
            if let Some(topic) = self.extensions.topic(&full_name) {
                let base: Vec<String> = names.iter().map(|n| n.to_snake_case()).collect();
                let base = base.join("_");
                let rust_type = rust_ident(&message.name().to_upper_camel_case());
                let comments = self.locations.get(path.as_slice()).map(|l| Comments {
                    leading_detached: Vec::new(),
                    leading: lines(l.leading_comments.as_deref()),
                    trailing: lines(l.trailing_comments.as_deref()),
                });
                found.push(TopicModel {
                    message: modules
                        .iter()
                        .cloned()
                        .chain([rust_type])
                        .collect::<Vec<_>>()
                        .join("::"),
                    topic: topic.escape_default().to_string(),
                    topic_literal: format!("{topic:?}"),
                    const_name: format!("{}_TOPIC", base.to_shouty_snake_case()),
                    publisher_fn: format!("{base}_publisher"),
                    subscribe_fn: format!("subscribe_{base}"),
                    doc: comments.as_ref().map(doc).unwrap_or_default(),
                    full_name,
                });
            }
            let modules: Vec<String> = modules
                .iter()
                .cloned()
                .chain([rust_ident(&message.name().to_snake_case())])
                .collect();
            // 3: DescriptorProto.nested_type
            let nested_path = [path.as_slice(), &[3]].concat();
            self.messages(&message.nested_type, &nested_path, &names, &modules, found);
        }
    }
}

fn lines(comment: Option<&str>) -> Vec<String> {
    comment
        .map(|c| c.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// An identifier as prost-build writes it: keywords become raw identifiers, except those
/// that cannot be (`self`, `super`, ...), which get a trailing `_`.
fn rust_ident(name: &str) -> String {
    match name {
        "_" | "super" | "self" | "Self" | "extern" | "crate" => format!("{name}_"),
        _ if name.starts_with(|c: char| c.is_numeric()) => format!("_{name}"),
        _ if syn::parse_str::<syn::Ident>(name).is_err() => format!("r#{name}"),
        _ => name.to_owned(),
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
