//! # protoc-gen-micro-otel
//!
//! Generates micro-otel services from `.proto` files: prost messages, and per service a
//! handler trait, a server, a registration function, a typed client and method constants.
//!
//! Use it as a protoc plugin (`protoc --micro-otel_out=DIR`), or from build.rs with
//! [`configure`], which parses with protox and needs no protoc. Both produce the same bytes.
//!
//! ## Which packages are written
//!
//! One file is written per proto package. Through protoc, only the packages of the files
//! protoc was given (the request's `file_to_generate`) are written, as protoc-gen-prost does;
//! the option `--micro-otel_opt=include_imports=true` writes the packages of their imports
//! too. A package that is written holds every file of that package that protoc read, given or
//! imported, so that its module compiles. Types of packages not written are still referred to
//! as `super::other::Type`: generate those packages too, or map them with `extern_path`.
//!
//! From build.rs, [`configure`] generates imports as well, as prost-build does
//! ([`Builder::include_imports`]`(false)` keeps to the files passed to `compile`). Either way,
//! well-known types (`google.protobuf.*`) are never written: prost maps them to `prost-types`.
//!
//! ## Custom options
//!
//! `micro_otel/options.proto` (shipped in the micro-otel crate's `proto/` folder) declares
//! `(micro_otel.topic)` on messages, `(micro_otel.service_name)` on services and
//! `(micro_otel.idempotent)` on methods. The build.rs path resolves the import with no
//! include path; with protoc, add `-I <micro-otel>/proto`. A message with a topic gets a
//! `<MESSAGE>_TOPIC` constant, `<message>_publisher(&Service)` and
//! `subscribe_<message>(&Service, handler)` after its package's services (nested messages
//! join their names: `Order.Shipped` gives `ORDER_SHIPPED_TOPIC`). prost-types drops
//! extensions, so they are read from the encoded descriptors.
//!
//! The pipeline: descriptors -> prost-build for messages, with a service
//! generator rendering the Tera templates of `templates/` -> prettyplease.

mod builder;
mod error;
mod extensions;
mod generate;
mod model;
mod names;
mod options;
mod plugin;
mod render;

pub use builder::{Builder, configure};
pub use error::Error;
pub use extensions::OPTIONS_PROTO;
pub use generate::{GeneratedFile, HEADER};
pub use plugin::{respond, respond_encoded};
