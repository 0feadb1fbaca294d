//! Serving plumbing shared by every party: gRPC (with `grpc.health.v1` and reflection) and HTTP (axum),
//! both on pre-bound listeners and both stopped by a cancellation token.

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

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

/// Serves `routes` on `listener` until `shutdown` is cancelled, adding `grpc.health.v1` (each of
/// `service_names` reported SERVING, plus the empty overall name) and server reflection for all misim protos.
///
/// # Errors
/// [`ServeError`] when reflection cannot be built or the transport fails.
pub async fn serve_grpc(
    listener: TcpListener,
    routes: tonic::service::Routes,
    service_names: &[&str],
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in service_names.iter().chain(std::iter::once(&"")) {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(misim_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let routes = routes.add_service(health).add_service(reflection);
    // Small gRPC messages otherwise wait ~40 ms for Nagle + delayed ACK on every call.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Serves an axum `router` on `listener` until `shutdown` is cancelled. The router sees the peer's
/// socket address through `axum::extract::ConnectInfo<SocketAddr>`.
///
/// # Errors
/// [`ServeError::Http`] when accepting connections fails.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await?;
    Ok(())
}

/// Binds a loopback-or-configured TCP listener, with the address in the error.
///
/// # Errors
/// [`ServeError::Bind`] with the address when binding fails (port in use, permission).
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}
