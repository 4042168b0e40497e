//! Static descriptions of RPC methods, generated as one constant per method.

/// Which sides of an RPC stream messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    BidiStreaming,
}

impl MethodKind {
    /// Whether the server answers with a stream.
    pub fn server_streams(self) -> bool {
        matches!(
            self,
            MethodKind::ServerStreaming | MethodKind::BidiStreaming
        )
    }

    /// Whether the client sends a stream.
    pub fn client_streams(self) -> bool {
        matches!(
            self,
            MethodKind::ClientStreaming | MethodKind::BidiStreaming
        )
    }
}

/// One RPC method as the generated code describes it.
///
/// Everything here is `'static` so the hot path never builds a string: the span name and
/// `rpc.method` attribute are [`Method::full_name`], a slice of [`Method::path`]. Generated
/// code builds one constant per method with [`Method::new`], so fields added later never
/// need the code regenerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method {
    service: &'static str,
    name: &'static str,
    path: &'static str,
    kind: MethodKind,
    idempotent: bool,
}

impl Method {
    /// The method at `path` (`/package.Service/Method`, e.g. `/user.User/GetUser`),
    /// streaming as `kind` says. The service and method names are read from the path; a
    /// path of another shape fails to compile in a constant, and panics otherwise.
    pub const fn new(path: &'static str, kind: MethodKind) -> Self {
        let bytes = path.as_bytes();
        // The last `/`: proto names hold none.
        let mut slash = bytes.len();
        while slash > 0 && bytes[slash - 1] != b'/' {
            slash -= 1;
        }
        assert!(
            bytes.len() > 1 && bytes[0] == b'/' && slash > 2 && slash < bytes.len(),
            "a method path is `/package.Service/Method`"
        );
        let (head, name) = bytes.split_at(slash);
        let (service, _) = head.split_at(slash - 1);
        let (_, service) = service.split_at(1);
        Self {
            service: ascii_cut(service),
            name: ascii_cut(name),
            path,
            kind,
            idempotent: false,
        }
    }

    /// The same method, marked idempotent (`(micro_otel.idempotent)` in the proto): safe to
    /// retry on any error.
    pub const fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Fully qualified proto service name, e.g. `user.User`.
    pub const fn service(&self) -> &'static str {
        self.service
    }

    /// Method name as written in the proto, e.g. `CreateUser`.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// HTTP/2 path of the method, e.g. `/user.User/CreateUser`.
    pub const fn path(&self) -> &'static str {
        self.path
    }

    /// Which sides stream.
    pub const fn kind(&self) -> MethodKind {
        self.kind
    }

    /// Whether the proto marks it idempotent (safe to retry on any error).
    pub const fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// `pkg.Service/Method`: the span name and the `rpc.method` attribute.
    pub const fn full_name(&self) -> &'static str {
        ascii_cut(self.path.as_bytes().split_at(1).1)
    }
}

/// A part of a `&'static str` cut at ASCII characters, which is UTF-8 again.
const fn ascii_cut(bytes: &'static [u8]) -> &'static str {
    match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(_) => panic!("cut at an ASCII character"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_reads_the_service_and_method_from_the_path() {
        const M: Method = Method::new("/user.User/GetUser", MethodKind::Unary).idempotent();
        assert_eq!(M.full_name(), "user.User/GetUser");
        assert_eq!((M.service(), M.name()), ("user.User", "GetUser"));
        assert!(M.is_idempotent());
        let nested = Method::new("/a.b.v1.C/D", MethodKind::BidiStreaming);
        assert_eq!((nested.service(), nested.name()), ("a.b.v1.C", "D"));
    }

    #[test]
    fn a_path_of_another_shape_is_refused() {
        for path in ["", "/", "GetUser", "/user.User/", "//GetUser", "/user.User"] {
            let made = std::panic::catch_unwind(|| Method::new(path, MethodKind::Unary));
            assert!(made.is_err(), "{path:?}");
        }
    }
}
