//! Generator options: parsed in one place from `--micro-otel_opt=k=v,...` or set through
//! the build.rs [`crate::Builder`].

use std::path::PathBuf;

use crate::error::Error;

const KNOWN: &str = "templates, include_file, extern_path, bytes, runtime_path, include_imports";

/// What the generator can be told.
#[derive(Debug, Clone)]
pub struct Options {
    /// A folder of `.tera` templates overriding the embedded ones by file name.
    pub templates: Option<PathBuf>,
    /// Also write a file with this name that declares the module tree and includes every
    /// generated file.
    pub include_file: Option<String>,
    /// Proto paths provided by other crates: `(".pkg", "::crate::pkg")`, as prost-build.
    pub extern_paths: Vec<(String, String)>,
    /// Proto paths whose `bytes` fields become `bytes::Bytes`, as prost-build.
    pub bytes: Vec<String>,
    /// Path of the runtime crate in generated code.
    pub runtime_path: String,
    /// Also generate the packages of imported files, not only those of the files asked for
    /// (protoc's `file_to_generate`). Well-known types (`google.protobuf.*`) and `extern_path`
    /// packages are never generated either way.
    ///
    /// `false` here and for the protoc plugin (`include_imports=true` turns it on, as buf's
    /// option of that name does); the build.rs [`crate::Builder`] starts with `true`, as
    /// prost-build generates imports too.
    pub include_imports: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            templates: None,
            include_file: None,
            extern_paths: Vec::new(),
            bytes: Vec::new(),
            runtime_path: "::micro_otel".into(),
            include_imports: false,
        }
    }
}

impl Options {
    /// Parses protoc's parameter string: comma-separated `key=value` pairs.
    pub fn parse(parameter: &str) -> Result<Self, Error> {
        let mut options = Self::default();
        for pair in parameter
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            options.set(key.trim(), value.trim())?;
        }
        Ok(options)
    }

    /// Sets one option by key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), Error> {
        let bad = |reason: &str| Error::BadOption {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        };
        if value.is_empty() && KNOWN.split(", ").any(|k| k == key) {
            return Err(bad("a value is required"));
        }
        match key {
            "templates" => self.templates = Some(value.into()),
            "include_file" => {
                if value.contains('/') || !value.ends_with(".rs") {
                    return Err(bad("expected a file name ending in .rs, without a folder"));
                }
                self.include_file = Some(value.into());
            }
            "extern_path" => {
                let (proto, rust) = value
                    .split_once('=')
                    .ok_or_else(|| bad("expected .proto.path=::rust::path"))?;
                if !proto.starts_with('.') {
                    return Err(bad("the proto path must start with `.`"));
                }
                self.extern_paths.push((proto.into(), rust.into()));
            }
            "bytes" => self.bytes.push(value.into()),
            "runtime_path" => {
                if syn::parse_str::<syn::Path>(value).is_err() {
                    return Err(bad("not a Rust path"));
                }
                self.runtime_path = value.into();
            }
            "include_imports" => {
                self.include_imports = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("expected true or false")),
                };
            }
            _ => {
                return Err(Error::UnknownOption {
                    key: key.into(),
                    known: KNOWN,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_known_option() {
        let o = Options::parse(
            "templates=tpl, include_file=mod.rs,extern_path=.common=::common,bytes=.,runtime_path=::mo,\
             include_imports=true",
        )
        .unwrap();
        assert_eq!(o.templates, Some(PathBuf::from("tpl")));
        assert_eq!(o.include_file.as_deref(), Some("mod.rs"));
        assert_eq!(
            o.extern_paths,
            [(".common".to_string(), "::common".to_string())]
        );
        assert_eq!(o.bytes, ["."]);
        assert_eq!(o.runtime_path, "::mo");
        assert!(o.include_imports);
    }

    #[test]
    fn imports_are_not_generated_unless_asked_for() {
        assert!(!Options::parse("").unwrap().include_imports);
        assert!(
            !Options::parse("include_imports=false")
                .unwrap()
                .include_imports
        );
    }

    #[test]
    fn an_unknown_key_is_named_in_the_error() {
        let err = Options::parse("include_file=mod.rs,flavour=mint")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`flavour`"), "{err}");
        assert!(err.contains("include_file"), "{err}");
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        for (param, needle) in [
            ("include_file=", "a value is required"),
            ("include_file=out/mod.rs", "include_file=out/mod.rs"),
            ("extern_path=common", "expected .proto.path"),
            ("runtime_path=not a path", "not a Rust path"),
            (
                "include_imports=yes",
                "`include_imports=yes`: expected true or false",
            ),
            ("include_imports", "`include_imports=`: a value is required"),
        ] {
            let err = Options::parse(param).unwrap_err().to_string();
            assert!(err.contains(needle), "{param}: {err}");
        }
    }
}
