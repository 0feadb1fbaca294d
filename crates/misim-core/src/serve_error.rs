//! The error of the serving plumbing ([`crate::serve`], [`crate::tls`]): a leaf, so the TLS layer
//! can report it without depending on the serving layer.

/// Errors while serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC transport failed.
    #[error("grpc transport: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// Reflection could not be built from the descriptor set.
    #[error("grpc reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The HTTP server failed.
    #[error("http server")]
    Http(#[from] std::io::Error),
    /// A listener could not be bound (port in use, permission).
    #[error("cannot bind {addr}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
