//! # protoc-gen-micro-otel
//!
//! Generates micro-otel services from `.proto` files: prost messages, and per service a
//! handler trait, a server, a registration function, a typed client and method constants.
//!
//! Use it as a protoc plugin (`protoc --micro-otel_out=DIR`), or from build.rs with
//! [`configure`], which parses with protox and needs no protoc. Both produce the same bytes.
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
