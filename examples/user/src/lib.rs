//! The user service from the micro-otel spec, on a real in-memory store.
//!
//! - [`user`]: code generated from `proto/user/user.proto` by build.rs;
//! - [`store`]: users in memory, with change notifications;
//! - [`Users`]: the `UserHandler` implementation;
//! - [`demo`]: runs server and client in one process and prints the trace tree.

pub mod demo;
mod handler;
pub mod store;

pub use handler::Users;

/// Generated from `proto/user/user.proto`.
pub mod user {
    include!(concat!(env!("OUT_DIR"), "/user.rs"));
}
