//! micro-otel's custom options (`micro_otel/options.proto`), read from raw descriptor bytes.
//!
//! prost-types decodes descriptors without their extensions, so `(micro_otel.topic)` and
//! friends are read here from the encoded `CodeGeneratorRequest` (protoc) or
//! `FileDescriptorSet` (protox), walking only the fields that lead to options:
//! `FileDescriptorProto.message_type` (and `nested_type`, recursively) -> `MessageOptions`,
//! `FileDescriptorProto.service` -> `ServiceOptions` and `.method` -> `MethodOptions`.
//! Malformed bytes are an error naming the file, never a panic.

use std::collections::BTreeMap;

use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

use crate::error::Error;

/// The import name of the options file: `import "micro_otel/options.proto";`.
pub const OPTIONS_PROTO_NAME: &str = "micro_otel/options.proto";

/// The text of `micro_otel/options.proto`, as shipped in the micro-otel crate's `proto/`
/// folder; the build.rs path resolves the import to it with no include path.
pub const OPTIONS_PROTO: &str = include_str!("../proto/micro_otel/options.proto");

/// `extend google.protobuf.MessageOptions { optional string topic = 51001; }`
pub const TOPIC_FIELD: u32 = 51001;
/// `extend google.protobuf.ServiceOptions { optional string service_name = 51002; }`
pub const SERVICE_NAME_FIELD: u32 = 51002;
/// `extend google.protobuf.MethodOptions { optional bool idempotent = 51003; }`
pub const IDEMPOTENT_FIELD: u32 = 51003;

/// How deep messages may nest before the descriptor is taken as malformed (protoc allows
/// far less in practice; this only bounds the recursion).
const MAX_NESTING: usize = 100;

/// The micro-otel options set in a descriptor set, keyed by fully qualified proto names
/// without the leading dot (`user.UserCreatedEvent`, `user.User`, `user.User.GetUser`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    topics: BTreeMap<String, String>,
    service_names: BTreeMap<String, String>,
    idempotent: BTreeMap<String, bool>,
}

impl Extensions {
    /// Reads the options of every file in an encoded `CodeGeneratorRequest` (the bytes protoc
    /// writes to a plugin's stdin; files are its field 15, `proto_file`).
    pub fn from_code_generator_request(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_files_field(bytes, 15, "CodeGeneratorRequest")
    }

    /// Reads the options of every file in an encoded `FileDescriptorSet` (field 1, `file`),
    /// such as `protox::Compiler::encode_file_descriptor_set` returns.
    pub fn from_file_descriptor_set(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_files_field(bytes, 1, "FileDescriptorSet")
    }

    /// `(micro_otel.topic)` of a message, e.g. `topic("user.UserCreatedEvent")`.
    pub fn topic(&self, message: &str) -> Option<&str> {
        self.topics.get(message).map(String::as_str)
    }

    /// `(micro_otel.service_name)` of a service, e.g. `service_name("user.User")`.
    pub fn service_name(&self, service: &str) -> Option<&str> {
        self.service_names.get(service).map(String::as_str)
    }

    /// `(micro_otel.idempotent)` of a method, e.g. `idempotent("user.User.GetUser")`.
    pub fn idempotent(&self, method: &str) -> Option<bool> {
        self.idempotent.get(method).copied()
    }

    fn from_files_field(bytes: &[u8], files_field: u32, container: &str) -> Result<Self, Error> {
        let mut extensions = Self::default();
        let mut index = 0;
        for field in Fields::new(bytes) {
            let field = field.map_err(|e| malformed(&format!("the {container}"), &e))?;
            if let (tag, Value::Bytes(file)) = field
                && tag == files_field
            {
                extensions.read_file(file, index)?;
                index += 1;
            }
        }
        Ok(extensions)
    }

    /// One `FileDescriptorProto`; errors name the file (or its position if it has no name).
    fn read_file(&mut self, bytes: &[u8], index: usize) -> Result<(), Error> {
        let mut name = None;
        let mut package = String::new();
        let mut messages = Vec::new();
        let mut services = Vec::new();
        let fields: Result<Vec<_>, _> = Fields::new(bytes).collect();
        let unnamed = || format!("file #{index} of the descriptor set");
        let fields = fields.map_err(|e| malformed(&unnamed(), &e))?;
        for (tag, value) in &fields {
            match (tag, value) {
                (1, Value::Bytes(b)) => name = Some(String::from_utf8_lossy(b).into_owned()),
                (2, Value::Bytes(b)) => package = String::from_utf8_lossy(b).into_owned(),
                (4, Value::Bytes(b)) => messages.push(*b),
                (6, Value::Bytes(b)) => services.push(*b),
                _ => {}
            }
        }
        let file = name.unwrap_or_else(unnamed);
        let result = (|| {
            for message in messages {
                self.read_message(message, &package, 0)?;
            }
            for service in services {
                self.read_service(service, &package)?;
            }
            Ok(())
        })();
        result.map_err(|message: String| Error::Descriptor { file, message })
    }

    /// A `DescriptorProto` in `scope` (a package or enclosing message), with its nested types.
    fn read_message(&mut self, bytes: &[u8], scope: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_NESTING {
            return Err(format!(
                "messages nested more than {MAX_NESTING} deep in `{scope}`"
            ));
        }
        let fields = fields_of(bytes, &format!("a message in `{scope}`"))?;
        let full_name = qualified(scope, &name_of(&fields));
        for (tag, value) in &fields {
            match (tag, value) {
                (3, Value::Bytes(nested)) => self.read_message(nested, &full_name, depth + 1)?,
                (7, Value::Bytes(options)) => {
                    let what = format!("the options of message `{full_name}`");
                    if let Some(value) = option(options, &what, TOPIC_FIELD)? {
                        let topic = string(value, "(micro_otel.topic)", &full_name)?;
                        self.topics.insert(full_name.clone(), topic);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A `ServiceDescriptorProto` in `package`, with its methods.
    fn read_service(&mut self, bytes: &[u8], package: &str) -> Result<(), String> {
        let fields = fields_of(bytes, &format!("a service in `{package}`"))?;
        let full_name = qualified(package, &name_of(&fields));
        for (tag, value) in &fields {
            match (tag, value) {
                (2, Value::Bytes(method)) => self.read_method(method, &full_name)?,
                (3, Value::Bytes(options)) => {
                    let what = format!("the options of service `{full_name}`");
                    if let Some(value) = option(options, &what, SERVICE_NAME_FIELD)? {
                        let name = string(value, "(micro_otel.service_name)", &full_name)?;
                        self.service_names.insert(full_name.clone(), name);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A `MethodDescriptorProto` of `service`.
    fn read_method(&mut self, bytes: &[u8], service: &str) -> Result<(), String> {
        let fields = fields_of(bytes, &format!("a method of `{service}`"))?;
        let full_name = qualified(service, &name_of(&fields));
        for (tag, value) in &fields {
            if let (4, Value::Bytes(options)) = (tag, value) {
                let what = format!("the options of method `{full_name}`");
                if let Some(value) = option(options, &what, IDEMPOTENT_FIELD)? {
                    let Value::Varint(flag) = value else {
                        return Err(format!(
                            "(micro_otel.idempotent) of `{full_name}` is not encoded as a bool"
                        ));
                    };
                    self.idempotent.insert(full_name.clone(), flag != 0);
                }
            }
        }
        Ok(())
    }
}

/// The value of extension `field` in encoded `options` (`what` names them in errors); the
/// last one counts when it repeats, as protobuf says.
fn option<'a>(options: &'a [u8], what: &str, field: u32) -> Result<Option<Value<'a>>, String> {
    Ok(fields_of(options, what)?
        .into_iter()
        .rev()
        .find(|(tag, _)| *tag == field)
        .map(|(_, value)| value))
}

/// A field's value, as far as the walk needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed-width or group field, skipped.
    Other,
}

/// The fields of one encoded message, in order; stops after the first error.
struct Fields<'a> {
    buf: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, failed: false }
    }

    fn next_field(&mut self) -> Result<(u32, Value<'a>), String> {
        let (tag, wire_type) = decode_key(&mut self.buf).map_err(|e| e.to_string())?;
        let value = match wire_type {
            WireType::Varint => {
                Value::Varint(decode_varint(&mut self.buf).map_err(|e| e.to_string())?)
            }
            WireType::LengthDelimited => {
                let len = decode_varint(&mut self.buf).map_err(|e| e.to_string())?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|len| *len <= self.buf.len())
                    .ok_or_else(|| {
                        format!(
                            "field {tag} is {len} bytes long but only {} remain",
                            self.buf.len()
                        )
                    })?;
                let (value, rest) = self.buf.split_at(len);
                self.buf = rest;
                Value::Bytes(value)
            }
            other => {
                skip_field(other, tag, &mut self.buf, DecodeContext::default())
                    .map_err(|e| e.to_string())?;
                Value::Other
            }
        };
        Ok((tag, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.is_empty() {
            return None;
        }
        let field = self.next_field();
        self.failed = field.is_err();
        Some(field)
    }
}

/// All fields of `bytes`, or an error saying `what` is malformed.
fn fields_of<'a>(bytes: &'a [u8], what: &str) -> Result<Vec<(u32, Value<'a>)>, String> {
    Fields::new(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} is malformed: {e}"))
}

/// The `name` field (1) of a descriptor, empty if absent.
fn name_of(fields: &[(u32, Value<'_>)]) -> String {
    fields
        .iter()
        .rev()
        .find_map(|(tag, value)| match (tag, value) {
            (1, Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

fn qualified(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

/// A string option's value; `option` and `owner` name it in errors.
fn string(value: Value<'_>, option: &str, owner: &str) -> Result<String, String> {
    match value {
        Value::Bytes(b) => String::from_utf8(b.to_vec())
            .map_err(|_| format!("{option} of `{owner}` is not valid UTF-8")),
        _ => Err(format!("{option} of `{owner}` is not encoded as a string")),
    }
}

fn malformed(what: &str, error: &str) -> Error {
    Error::Descriptor {
        file: what.to_owned(),
        message: format!("malformed descriptor: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost::encoding::{encode_key, encode_varint};
    use prost_types::{
        DescriptorProto, FileDescriptorProto, FileDescriptorSet, MessageOptions,
        MethodDescriptorProto, ServiceDescriptorProto,
    };

    use super::*;

    /// An encoded string field.
    fn string_field(tag: u32, value: &str) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_key(tag, WireType::LengthDelimited, &mut buf);
        encode_varint(value.len() as u64, &mut buf);
        buf.extend_from_slice(value.as_bytes());
        buf
    }

    fn varint_field(tag: u32, value: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_key(tag, WireType::Varint, &mut buf);
        encode_varint(value, &mut buf);
        buf
    }

    /// `message` encoded with `extra` (raw option fields) appended to its options at `tag`.
    fn with_options(message: &impl Message, options_tag: u32, extra: &[u8]) -> Vec<u8> {
        let mut buf = message.encode_to_vec();
        encode_key(options_tag, WireType::LengthDelimited, &mut buf);
        encode_varint(extra.len() as u64, &mut buf);
        buf.extend_from_slice(extra);
        buf
    }

    fn nested(tag: u32, inner: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_key(tag, WireType::LengthDelimited, &mut buf);
        encode_varint(inner.len() as u64, &mut buf);
        buf.extend_from_slice(inner);
        buf
    }

    fn named(name: &str) -> DescriptorProto {
        DescriptorProto {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    /// A file `events.proto` in package `shop` with an `Order` message whose nested
    /// `Shipped` has a topic, a top-level `Placed` with one, and `Plain` without.
    fn events_file() -> Vec<u8> {
        let shipped = with_options(
            &named("Shipped"),
            7,
            &string_field(TOPIC_FIELD, "order.shipped"),
        );
        let order = [named("Order").encode_to_vec(), nested(3, &shipped)].concat();
        let placed = with_options(
            &named("Placed"),
            7,
            &string_field(TOPIC_FIELD, "order.placed"),
        );
        let method = with_options(
            &MethodDescriptorProto {
                name: Some("Get".into()),
                ..Default::default()
            },
            4,
            &varint_field(IDEMPOTENT_FIELD, 1),
        );
        let service = [
            with_options(
                &ServiceDescriptorProto {
                    name: Some("Orders".into()),
                    ..Default::default()
                },
                3,
                &string_field(SERVICE_NAME_FIELD, "orders.service"),
            ),
            nested(2, &method),
        ]
        .concat();
        [
            FileDescriptorProto {
                name: Some("events.proto".into()),
                package: Some("shop".into()),
                message_type: vec![named("Plain")],
                ..Default::default()
            }
            .encode_to_vec(),
            nested(4, &order),
            nested(4, &placed),
            nested(6, &service),
        ]
        .concat()
    }

    #[test]
    fn topics_of_top_level_and_nested_messages_are_keyed_by_full_name() {
        let set = nested(1, &events_file());
        let ext = Extensions::from_file_descriptor_set(&set).unwrap();
        assert_eq!(ext.topic("shop.Placed"), Some("order.placed"));
        assert_eq!(ext.topic("shop.Order.Shipped"), Some("order.shipped"));
        assert_eq!(ext.topic("shop.Order"), None);
        assert_eq!(ext.topic("shop.Plain"), None);
    }

    #[test]
    fn service_name_and_idempotent_are_read_from_service_and_method_options() {
        let set = nested(1, &events_file());
        let ext = Extensions::from_file_descriptor_set(&set).unwrap();
        assert_eq!(ext.service_name("shop.Orders"), Some("orders.service"));
        assert_eq!(ext.idempotent("shop.Orders.Get"), Some(true));
        assert_eq!(ext.idempotent("shop.Orders.Other"), None);
    }

    #[test]
    fn a_code_generator_request_is_read_from_its_proto_file_field() {
        // Field 1 of a request is `file_to_generate` (strings): not descriptors.
        let request = [string_field(1, "events.proto"), nested(15, &events_file())].concat();
        let ext = Extensions::from_code_generator_request(&request).unwrap();
        assert_eq!(ext.topic("shop.Placed"), Some("order.placed"));
    }

    #[test]
    fn options_without_extensions_and_other_options_are_ignored() {
        let message = DescriptorProto {
            name: Some("M".into()),
            options: Some(MessageOptions {
                deprecated: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let set = FileDescriptorSet {
            file: vec![FileDescriptorProto {
                name: Some("m.proto".into()),
                message_type: vec![message],
                ..Default::default()
            }],
        };
        let ext = Extensions::from_file_descriptor_set(&set.encode_to_vec()).unwrap();
        assert_eq!(ext, Extensions::default());
    }

    #[test]
    fn a_message_without_package_is_keyed_by_its_name() {
        let message = with_options(&named("Ping"), 7, &string_field(TOPIC_FIELD, "ping"));
        let file = [
            FileDescriptorProto {
                name: Some("ping.proto".into()),
                ..Default::default()
            }
            .encode_to_vec(),
            nested(4, &message),
        ]
        .concat();
        let ext = Extensions::from_file_descriptor_set(&nested(1, &file)).unwrap();
        assert_eq!(ext.topic("Ping"), Some("ping"));
    }

    #[test]
    fn every_truncation_of_a_descriptor_set_is_an_error_or_a_subset_never_a_panic() {
        let set = nested(1, &events_file());
        for len in 0..set.len() {
            // Either an error or fewer options: decoding must simply not panic.
            let _ = Extensions::from_file_descriptor_set(&set[..len]);
        }
        let err = Extensions::from_file_descriptor_set(&set[..set.len() - 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("malformed"), "{err}");
    }

    #[test]
    fn a_malformed_message_inside_a_file_is_an_error_naming_the_file() {
        let broken_message = nested(4, &[0x0a, 0x05, b'a']); // name says 5 bytes, has 1
        let file = [
            FileDescriptorProto {
                name: Some("broken.proto".into()),
                package: Some("pkg".into()),
                ..Default::default()
            }
            .encode_to_vec(),
            broken_message,
        ]
        .concat();
        let err = Extensions::from_file_descriptor_set(&nested(1, &file))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("broken.proto:"), "{err}");
        assert!(err.contains("a message in `pkg` is malformed"), "{err}");
    }

    #[test]
    fn a_topic_with_the_wrong_wire_type_or_bad_utf8_is_an_error_naming_the_message() {
        for (options, needle) in [
            (varint_field(TOPIC_FIELD, 7), "not encoded as a string"),
            (nested(TOPIC_FIELD, &[0xff, 0xfe]), "not valid UTF-8"),
        ] {
            let message = with_options(&named("Ev"), 7, &options);
            let file = [
                FileDescriptorProto {
                    name: Some("ev.proto".into()),
                    package: Some("p".into()),
                    ..Default::default()
                }
                .encode_to_vec(),
                nested(4, &message),
            ]
            .concat();
            let err = Extensions::from_file_descriptor_set(&nested(1, &file))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("ev.proto:"), "{err}");
            assert!(err.contains("(micro_otel.topic) of `p.Ev`"), "{err}");
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn an_idempotent_option_that_is_not_a_bool_is_an_error() {
        let method = with_options(
            &MethodDescriptorProto {
                name: Some("Get".into()),
                ..Default::default()
            },
            4,
            &string_field(IDEMPOTENT_FIELD, "yes"),
        );
        let service = [
            ServiceDescriptorProto {
                name: Some("S".into()),
                ..Default::default()
            }
            .encode_to_vec(),
            nested(2, &method),
        ]
        .concat();
        let file = [
            FileDescriptorProto {
                name: Some("s.proto".into()),
                ..Default::default()
            }
            .encode_to_vec(),
            nested(6, &service),
        ]
        .concat();
        let err = Extensions::from_file_descriptor_set(&nested(1, &file))
            .unwrap_err()
            .to_string();
        assert!(err.contains("(micro_otel.idempotent) of `S.Get`"), "{err}");
    }

    #[test]
    fn absurdly_deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut message = named("Leaf").encode_to_vec();
        for _ in 0..=MAX_NESTING + 1 {
            message = [named("N").encode_to_vec(), nested(3, &message)].concat();
        }
        let file = [
            FileDescriptorProto {
                name: Some("deep.proto".into()),
                ..Default::default()
            }
            .encode_to_vec(),
            nested(4, &message),
        ]
        .concat();
        let err = Extensions::from_file_descriptor_set(&nested(1, &file))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nested more than"), "{err}");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bytes in [
            &[
                0xff_u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
            &[0x0a, 0x80][..],
            &[0x0c][..], // end-group without a start
            &[0x00][..], // field number 0
        ] {
            assert!(
                Extensions::from_file_descriptor_set(bytes).is_err(),
                "{bytes:?}"
            );
            assert!(
                Extensions::from_code_generator_request(bytes).is_err(),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn the_shipped_options_file_declares_the_numbers_the_decoder_reads() {
        for (option, number) in [
            ("optional string topic", TOPIC_FIELD),
            ("optional string service_name", SERVICE_NAME_FIELD),
            ("optional bool idempotent", IDEMPOTENT_FIELD),
        ] {
            let line = format!("{option} = {number};");
            assert!(OPTIONS_PROTO.contains(&line), "missing `{line}`");
        }
        assert!(OPTIONS_PROTO.contains("package micro_otel;"));
        assert!((50000..=99999).contains(&TOPIC_FIELD));
    }
}
