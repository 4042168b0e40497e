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
//! The pipeline ([`generate()`]): descriptors -> prost-build for messages, with a service
//! generator rendering the Tera templates of `templates/` -> prettyplease.

mod builder;
mod error;
mod generate;
mod model;
mod names;
mod options;
mod plugin;
mod render;

pub use builder::{Builder, configure};
pub use error::Error;
pub use generate::{GeneratedFile, HEADER, generate};
pub use options::Options;
pub use plugin::respond;
