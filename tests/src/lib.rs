//! Workspace tests: the golden outputs compiled (so rustc and clippy check generated code),
//! a [`harness`] for end-to-end tests, and the tests themselves beside this folder
//! (`rpc.rs`, `tracing.rs`, `wrappers.rs`).

pub mod consul_fake;
pub mod corpus;
pub mod discovery;
pub mod etcd;
pub mod harness;
pub mod meters;
pub mod nats;
pub mod otlp;
pub mod pubsub;
pub mod python;
pub mod rotel;
pub mod tls;

/// Every golden case's expected output, compiled as it would be in a user's crate.
pub mod golden {
    /// `tests/golden/comments`
    pub mod comments_case {
        include!("../golden/comments/expected/mod.rs");
    }
    /// `tests/golden/events`
    pub mod events_case {
        include!("../golden/events/expected/mod.rs");
    }
    /// `tests/golden/keywords`
    pub mod keywords_case {
        include!("../golden/keywords/expected/mod.rs");
    }
    /// `tests/golden/nested_imports`
    pub mod nested_imports_case {
        include!("../golden/nested_imports/expected/mod.rs");
    }
    /// `tests/golden/rpc_kinds`
    pub mod rpc_kinds_case {
        include!("../golden/rpc_kinds/expected/mod.rs");
    }
    /// `tests/golden/two_services`
    pub mod two_services_case {
        include!("../golden/two_services/expected/mod.rs");
    }
    /// `tests/golden/user`
    pub mod user_case {
        include!("../golden/user/expected/mod.rs");
    }
    /// `tests/golden/well_known`
    pub mod well_known_case {
        include!("../golden/well_known/expected/mod.rs");
    }
}
