//! Everything that can go wrong while generating, each naming the file, element or value.

use std::path::PathBuf;

/// A generation error; its message names the offending file, element, option or value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option key the generator does not know.
    #[error("unknown option `{key}` (known: {known})")]
    UnknownOption {
        /// The key given.
        key: String,
        /// The keys that exist.
        known: &'static str,
    },
    /// An option with a value that cannot be used.
    #[error("option `{key}={value}`: {reason}")]
    BadOption {
        /// The option key.
        key: String,
        /// The value given.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A `.proto` file could not be found, read or parsed.
    #[error("{location}: {message}")]
    Parse {
        /// `file:line:column` where known, else the file name.
        location: String,
        /// What the parser said.
        message: String,
    },
    /// Reading a template or writing an output file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Two generated items would get the same Rust name.
    #[error("{file}: {element} would generate `{name}`, which {other}; rename one of them")]
    NameClash {
        /// The proto file declaring the element.
        file: String,
        /// The element, e.g. ``service `user.User` ``.
        element: String,
        /// The Rust name both would use.
        name: String,
        /// What already uses the name.
        other: String,
    },
    /// A template failed to load or render.
    #[error("template `{name}`: {message}")]
    Template {
        /// The template file name.
        name: String,
        /// Tera's explanation, with its causes.
        message: String,
    },
    /// Generated code did not parse as Rust (a bug, or a broken custom template).
    #[error("generated code for `{file}` is not valid Rust: {message}")]
    Format {
        /// The output file.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// Descriptor bytes could not be read for micro-otel's custom options, or an option has
    /// a value that cannot be used.
    #[error("{file}: {message}")]
    Descriptor {
        /// The proto file (or, if it cannot be told, the part of the input) at fault.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// prost-build rejected the descriptors.
    #[error("generating messages: {0}")]
    Prost(std::io::Error),
    /// The protoc request could not be decoded.
    #[error("reading the CodeGeneratorRequest from protoc: {0}")]
    Request(#[from] prost::DecodeError),
}

impl From<protox::Error> for Error {
    /// Keeps protox's message and adds the `file:line:column` its diagnostic points at.
    fn from(error: protox::Error) -> Self {
        use miette::Diagnostic;
        let mut location = error.file().unwrap_or("<input>").to_owned();
        let label = error.labels().and_then(|mut labels| labels.next());
        if let (Some(source), Some(label)) = (error.source_code(), label)
            && let Ok(span) = source.read_span(label.inner(), 0, 0)
        {
            location = format!("{location}:{}:{}", span.line() + 1, span.column() + 1);
        }
        Error::Parse {
            location,
            message: error.to_string(),
        }
    }
}
