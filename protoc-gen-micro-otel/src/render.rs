//! Tera templates: the embedded set from `templates/`, optionally overridden from a folder.

use std::path::Path;

use tera::Tera;

use crate::error::Error;
use crate::model::{ServiceModel, TopicModel};

/// The embedded templates, by file name.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "service.rs.tera",
        include_str!("../templates/service.rs.tera"),
    ),
    (
        "methods.rs.tera",
        include_str!("../templates/methods.rs.tera"),
    ),
    (
        "handler.rs.tera",
        include_str!("../templates/handler.rs.tera"),
    ),
    (
        "server.rs.tera",
        include_str!("../templates/server.rs.tera"),
    ),
    (
        "client.rs.tera",
        include_str!("../templates/client.rs.tera"),
    ),
    ("topic.rs.tera", include_str!("../templates/topic.rs.tera")),
];

/// The entry template rendered once per service.
const ENTRY: &str = "service.rs.tera";

/// The template rendered once per message with a `(micro_otel.topic)` option.
const TOPIC: &str = "topic.rs.tera";

/// Renders services to Rust source.
pub(crate) struct Renderer {
    tera: Tera,
    runtime_path: String,
}

impl Renderer {
    /// The embedded templates, each replaced by a file of the same name in `dir` if given.
    pub(crate) fn new(dir: Option<&Path>, runtime_path: &str) -> Result<Self, Error> {
        let mut templates: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
                path: dir.into(),
                source,
            })?;
            for entry in entries {
                let path = entry
                    .map_err(|source| Error::Io {
                        path: dir.into(),
                        source,
                    })?
                    .path();
                let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .filter(|n| n.ends_with(".tera"))
                else {
                    continue;
                };
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                let name = name.to_owned();
                match templates.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = text,
                    None => templates.push((name, text)),
                }
            }
        }
        let mut tera = Tera::default();
        tera.autoescape_on(Vec::new());
        tera.add_raw_templates(templates)
            .map_err(|e| template_error("(loading)", &e))?;
        Ok(Self {
            tera,
            runtime_path: runtime_path.to_owned(),
        })
    }

    /// Renders one service.
    pub(crate) fn service(&self, service: &ServiceModel) -> Result<String, Error> {
        let mut context = tera::Context::new();
        context.insert("service", service);
        context.insert("rt", &self.runtime_path);
        self.tera
            .render(ENTRY, &context)
            .map_err(|e| template_error(ENTRY, &e))
    }

    /// Renders the pub/sub helpers of one message with a topic.
    pub(crate) fn topic(&self, topic: &TopicModel) -> Result<String, Error> {
        let mut context = tera::Context::new();
        context.insert("topic", topic);
        context.insert("rt", &self.runtime_path);
        self.tera
            .render(TOPIC, &context)
            .map_err(|e| template_error(TOPIC, &e))
    }
}

/// Tera's error with its whole chain of causes (the useful part is usually the last).
fn template_error(name: &str, error: &tera::Error) -> Error {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Template {
        name: name.into(),
        message,
    }
}
