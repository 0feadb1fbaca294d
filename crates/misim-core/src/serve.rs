//! Serving plumbing shared by every party: gRPC (with `grpc.health.v1` and reflection) and HTTP (axum),
//! both on pre-bound listeners and both stopped by a cancellation token.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::limits::{Admission, ConnLimits};

pub use crate::serve_error::ServeError;

/// Serves `routes` on `listener` until `shutdown` is cancelled, adding `grpc.health.v1` (each of
/// `service_names` reported SERVING, plus the empty overall name) and server reflection listing
/// `service_names`, health and reflection (every misim service when `service_names` is empty). Plain HTTP/2 with [`ConnLimits::GRPC`]: for unit tests with fake peers and for the
/// user-facing ARM API; internal services use [`serve_grpc_tls`].
///
/// # Errors
/// [`ServeError`] when reflection cannot be built or the transport fails.
pub async fn serve_grpc(
    listener: TcpListener,
    routes: tonic::service::Routes,
    service_names: &[&str],
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_grpc_tls(listener, routes, service_names, None, shutdown).await
}

/// [`serve_grpc`] with an optional TLS config (control-plane mTLS: see [`crate::control`]), behind
/// [`ConnLimits::GRPC`] (caps per listener and source address, a process-wide descriptor budget, and
/// back-off when accept fails).
///
/// # Errors
/// [`ServeError`] when reflection cannot be built, the TLS config is refused, or the transport fails.
pub async fn serve_grpc_tls(
    listener: TcpListener,
    routes: tonic::service::Routes,
    service_names: &[&str],
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in service_names.iter().chain(std::iter::once(&"")) {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(misim_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    // Reflection lists what this port serves, not every misim service.
    if !service_names.is_empty() {
        // Control ports (TLS) also serve the recorded requests (crate::events).
        let events = tls.is_some().then_some("misim.events.v1.Events");
        for name in service_names.iter().copied().chain(events).chain([
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ]) {
            reflection = reflection.with_service_name(name);
        }
    }
    let reflection = reflection.build_v1()?;
    let mut routes = routes.add_service(health).add_service(reflection);
    // Control ports serve this process' recorded requests to the admin role (crate::events).
    if tls.is_some() {
        routes = routes.add_service(
            crate::events::EventsService::new(crate::control::ControlAuth::Enforce)
                .with_shutdown(shutdown.clone())
                .server(),
        );
    }
    // The listener's name is forgotten when serving ends, before its port can be reused.
    let _name = crate::telemetry::propagation::ListenerNameGuard(listener.local_addr().ok());
    let record = crate::events::GrpcRecordLayer::new(
        crate::telemetry::propagation::listener_party(listener.local_addr().ok()),
    );
    // Each call continues its caller's trace (W3C traceparent) and is counted.
    let trace = crate::telemetry::propagation::TraceLayer::new(
        crate::telemetry::propagation::listener_party(listener.local_addr().ok()),
    );
    let admission = Admission::new(ConnLimits::GRPC);
    let incoming =
        futures_util::stream::unfold((listener, admission), |(listener, admission)| async move {
            let (stream, _) = admission.accept(&listener).await;
            Some((Ok::<_, std::io::Error>(stream), (listener, admission)))
        });
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .concurrency_limit_per_connection(256)
        .layer(trace)
        .layer(record);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Serves an axum `router` on `listener` until `shutdown` is cancelled, with [`ConnLimits::HTTP`].
/// The router sees the peer's socket address through `axum::extract::ConnectInfo<SocketAddr>`.
///
/// # Errors
/// [`ServeError::Http`] when the listener's address cannot be read.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_http_limited(listener, router, ConnLimits::HTTP, shutdown).await
}

/// How long in-flight requests may take to finish after shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// [`serve_http`] with explicit limits: HTTP/1.1 and HTTP/2 (hyper-util's auto builder), headers
/// within `limits.header_timeout`, idle connections closed after `limits.idle_timeout`, connections
/// over the caps closed on accept. On shutdown, stops accepting and gives open requests 5 s.
///
/// # Errors
/// [`ServeError::Http`] when the listener's address cannot be read.
pub async fn serve_http_limited(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt;

    // The listener's name is forgotten when serving ends, before its port can be reused.
    let _name = crate::telemetry::propagation::ListenerNameGuard(Some(listener.local_addr()?));
    let trace = crate::telemetry::propagation::TraceLayer::new(
        crate::telemetry::propagation::listener_party(Some(listener.local_addr()?)),
    );
    let record = crate::events::HttpRecordLayer::new(
        crate::telemetry::propagation::listener_party(Some(listener.local_addr()?)),
    );
    let admission = Admission::new(limits);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Every connection task, so that none outlives this function: the router's state (a party's
    // store among it) is released when serving returns, and the party can be started again at once.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = admission.accept(&listener) => accepted,
        };
        let svc =
            router
                .clone()
                .map_request(move |mut req: axum::http::Request<axum::body::Body>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req
                });
        // Every request recorded (crate::events) inside its trace span, so with its trace ID.
        let svc = tower::Layer::layer(&record, svc);
        let svc = svc.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req
        });
        let svc = tower::Layer::layer(&trace, svc);
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer = %peer, error = %e, "http connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(HTTP_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("http connections still open after the drain period: closing them");
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
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
