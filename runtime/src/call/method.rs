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
/// `rpc.method` attribute are [`Method::full_name`], a slice of [`Method::path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method {
    /// Fully qualified proto service name, e.g. `user.User`.
    pub service: &'static str,
    /// Method name as written in the proto, e.g. `CreateUser`.
    pub name: &'static str,
    /// HTTP/2 path of the method, e.g. `/user.User/CreateUser`.
    pub path: &'static str,
    /// Which sides stream.
    pub kind: MethodKind,
    /// Marked idempotent in the proto (safe to retry on any error).
    pub idempotent: bool,
}

impl Method {
    /// `pkg.Service/Method`: the span name and the `rpc.method` attribute.
    pub fn full_name(&self) -> &'static str {
        self.path.strip_prefix('/').unwrap_or(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_name_drops_the_leading_slash() {
        let m = Method {
            service: "user.User",
            name: "GetUser",
            path: "/user.User/GetUser",
            kind: MethodKind::Unary,
            idempotent: true,
        };
        assert_eq!(m.full_name(), "user.User/GetUser");
    }
}
