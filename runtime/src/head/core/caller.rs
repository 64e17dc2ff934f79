//! Who sent a request to the head: what its connection proved when it
//! said hello.

/// What a connection proved when it said hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A node certificate from the cluster CA (raylets, the head's dialer),
    /// with the certificate's SHA-256.
    Node {
        /// SHA-256 of the certificate.
        cert: [u8; 32],
    },
    /// The join token without a certificate (drivers, the CLI): the
    /// cluster's admin.
    Client,
    /// A user's token (`head::access`), from this address.
    User {
        /// The user's id in the user table.
        id: u64,
        /// The connection's remote address.
        from: std::net::SocketAddr,
    },
    /// The join token, asking to act as a viewer of some namespaces only
    /// (`head::access::Principal::join_token_viewer`), from this address.
    Viewer {
        /// Its namespaces' index in the core's viewer table.
        id: u32,
        /// The connection's remote address.
        from: std::net::SocketAddr,
    },
}

impl Caller {
    /// Whether it proved a node certificate.
    pub fn is_node(&self) -> bool {
        matches!(self, Caller::Node { .. })
    }

    /// Whether its requests pass the gate: users, and viewers.
    pub fn is_gated(&self) -> bool {
        matches!(self, Caller::User { .. } | Caller::Viewer { .. })
    }
}
