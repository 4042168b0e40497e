//! The build.rs API: parse with protox (no protoc needed), generate, write to `OUT_DIR`.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::generate::{GeneratedFile, generate};
use crate::options::Options;

/// Starts configuring generation from build.rs:
///
/// ```no_run
/// protoc_gen_micro_otel::configure()
///     .compile(&["proto/user/user.proto"], &["proto"])
///     .expect("generating the user service");
/// ```
pub fn configure() -> Builder {
    Builder::default()
}

/// Generation settings for build.rs; the same options as the protoc plugin.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    options: Options,
    out_dir: Option<PathBuf>,
}

impl Builder {
    /// Where files are written (default: `OUT_DIR`).
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Also writes an include file with this name (e.g. `mod.rs`) declaring every package
    /// as a nested module.
    pub fn include_file(mut self, name: impl Into<String>) -> Self {
        self.options.include_file = Some(name.into());
        self
    }

    /// Overrides embedded templates with the `.tera` files in `dir`.
    pub fn templates(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.templates = Some(dir.into());
        self
    }

    /// Uses Rust path `rust` for proto path `proto` (e.g. `.common`, `::common_protos`).
    pub fn extern_path(mut self, proto: impl Into<String>, rust: impl Into<String>) -> Self {
        self.options.extern_paths.push((proto.into(), rust.into()));
        self
    }

    /// Generates `bytes::Bytes` for `bytes` fields under `path` (`.` for all).
    pub fn bytes(mut self, path: impl Into<String>) -> Self {
        self.options.bytes.push(path.into());
        self
    }

    /// Sets an option by its protoc-plugin key, as in `--micro-otel_opt=key=value`.
    pub fn option(mut self, key: &str, value: &str) -> Result<Self, Error> {
        self.options.set(key, value)?;
        Ok(self)
    }

    /// Parses `protos` (searching `includes` for imports) and returns the generated files
    /// without writing them.
    pub fn generate(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<Vec<GeneratedFile>, Error> {
        Ok(self.parse_and_generate(protos, includes)?.0)
    }

    /// Generates into the output folder and tells cargo to rerun when any proto read changes.
    pub fn compile(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        self.compile_reporting(protos, includes, &mut std::io::stdout())
    }

    /// [`Builder::compile`], writing cargo's rerun hints to `cargo` instead of stdout.
    fn compile_reporting(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
        cargo: &mut dyn std::io::Write,
    ) -> Result<(), Error> {
        let (files, read) = self.parse_and_generate(protos, includes)?;
        for path in read {
            writeln!(cargo, "cargo:rerun-if-changed={}", path.display()).map_err(|source| {
                Error::Io {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| Error::BadOption {
                    key: "out_dir".into(),
                    value: String::new(),
                    reason: "OUT_DIR is not set; call from build.rs or set out_dir".into(),
                })?,
        };
        std::fs::create_dir_all(&out_dir).map_err(|source| Error::Io {
            path: out_dir.clone(),
            source,
        })?;
        for file in files {
            let path = out_dir.join(&file.name);
            if std::fs::read(&path).ok().as_deref() != Some(file.content.as_bytes()) {
                std::fs::write(&path, file.content).map_err(|source| Error::Io { path, source })?;
            }
        }
        Ok(())
    }

    fn parse_and_generate(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(Vec<GeneratedFile>, Vec<PathBuf>), Error> {
        let mut compiler = protox::Compiler::new(includes)?;
        compiler.include_source_info(true).include_imports(true);
        for proto in protos {
            compiler.open_file(proto)?;
        }
        let read = compiler
            .files()
            .filter_map(|f| f.path().map(Path::to_path_buf))
            .collect();
        let fds = compiler.file_descriptor_set();
        Ok((generate(&fds.file, &self.options)?, read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_asks_cargo_to_rerun_for_every_proto_read_including_imports() {
        let dir = std::env::temp_dir().join(format!("micro-otel-rerun-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("dep")).unwrap();
        std::fs::write(
            dir.join("dep/common.proto"),
            "syntax = \"proto3\";\npackage dep;\nmessage M {}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("svc.proto"),
            "syntax = \"proto3\";\npackage svc;\nimport \"dep/common.proto\";\n\
             service S { rpc Do(dep.M) returns (dep.M); }\n",
        )
        .unwrap();
        let mut hints = Vec::new();
        configure()
            .out_dir(dir.join("out"))
            .compile_reporting(&["svc.proto"], &[&dir], &mut hints)
            .unwrap();
        let hints = String::from_utf8(hints).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            hints
                .lines()
                .any(|l| l.starts_with("cargo:rerun-if-changed=") && l.ends_with("svc.proto")),
            "{hints}"
        );
        assert!(
            hints.lines().any(|l| l.ends_with("dep/common.proto")),
            "{hints}"
        );
        assert!(
            !hints.contains("google/protobuf"),
            "bundled well-known types are not files: {hints}"
        );
    }
}
