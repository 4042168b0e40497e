//! Rust names: which ones prost takes in each package, and checking that ours don't clash.

use std::collections::HashMap;

use heck::ToSnakeCase;
use prost_types::{DescriptorProto, FileDescriptorProto};

/// Top-level Rust names in use per proto package, each with what uses it.
#[derive(Debug, Default)]
pub(crate) struct Names {
    by_package: HashMap<String, HashMap<String, String>>,
}

impl Names {
    /// Records the names prost-build generates for the messages and enums of `files`.
    pub(crate) fn of_messages(files: &[FileDescriptorProto]) -> Self {
        let mut names = Self::default();
        for file in files {
            let taken = names
                .by_package
                .entry(file.package().to_owned())
                .or_default();
            for message in &file.message_type {
                let what = format!("message `{}` in {}", message.name(), file.name());
                taken.insert(upper_camel(message.name()), what.clone());
                if has_nested_module(message) {
                    taken.insert(
                        message.name().to_snake_case(),
                        format!("the module of {what}"),
                    );
                }
            }
            for e in &file.enum_type {
                taken.insert(
                    upper_camel(e.name()),
                    format!("enum `{}` in {}", e.name(), file.name()),
                );
            }
        }
        names
    }

    /// Claims `name` in `package` for `what`; if taken, returns what has it.
    pub(crate) fn claim(&mut self, package: &str, name: &str, what: &str) -> Result<(), String> {
        let taken = self.by_package.entry(package.to_owned()).or_default();
        match taken.get(name) {
            Some(other) => Err(format!("is already used by {other}")),
            None => {
                taken.insert(name.to_owned(), what.to_owned());
                Ok(())
            }
        }
    }
}

/// prost-build's type name for a proto name.
pub(crate) fn upper_camel(name: &str) -> String {
    use heck::ToUpperCamelCase;
    name.to_upper_camel_case()
}

/// Whether prost-build emits a `snake_case` module for a message's nested items.
fn has_nested_module(message: &DescriptorProto) -> bool {
    let is_map_entry = |m: &DescriptorProto| m.options.as_ref().is_some_and(|o| o.map_entry());
    let real_oneofs = message.oneof_decl.iter().enumerate().any(|(i, _)| {
        message
            .field
            .iter()
            .any(|f| f.oneof_index == Some(i as i32) && !f.proto3_optional())
    });
    !message.enum_type.is_empty()
        || message.nested_type.iter().any(|m| !is_map_entry(m))
        || real_oneofs
}
