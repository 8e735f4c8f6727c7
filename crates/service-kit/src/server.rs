//! Starting an actix-web server the same way in every service: the listener it is given
//! (port 0 in tests), no signal handling of its own (the service's shutdown flag decides),
//! and a graceful stop when that flag turns: no new connections, requests in flight finish.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, Error, HttpServer};
use tokio::sync::watch;

/// How long an idle keep-alive connection is held open. Longer than the idle timeouts
/// of load balancers and client connection pools (60 s is common): the client side
/// closes first, so a client never sends a request on a connection the server is
/// closing at that moment (it would see a broken pipe, not an answer).
pub const KEEP_ALIVE: Duration = Duration::from_secs(75);

/// How a server is run.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// HTTP worker threads; 0: one per core.
    pub workers: usize,
    /// How long requests in flight may take to finish at shutdown.
    pub shutdown_timeout: Duration,
}

/// Starts serving `app()` on `listener`; stops gracefully once `shutdown` turns true.
/// Await the returned server to wait for the stop.
pub fn serve<F, T, B>(
    listener: std::net::TcpListener,
    options: ServerOptions,
    shutdown: watch::Receiver<bool>,
    app: F,
) -> std::io::Result<Server>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<ServiceRequest, Config = (), Response = ServiceResponse<B>, Error = Error, InitError = ()>
        + 'static,
    B: MessageBody + 'static,
{
    serve_all(vec![listener], options, shutdown, app)
}

/// [`serve`] on several listeners at once (a public and an internal port); handlers
/// tell them apart by `HttpRequest::app_config().local_addr()`.
pub fn serve_all<F, T, B>(
    listeners: Vec<std::net::TcpListener>,
    options: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
    app: F,
) -> std::io::Result<Server>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<ServiceRequest, Config = (), Response = ServiceResponse<B>, Error = Error, InitError = ()>
        + 'static,
    B: MessageBody + 'static,
{
    let mut server = HttpServer::new(app)
        .backlog(4096)
        .disable_signals()
        .keep_alive(KEEP_ALIVE)
        .shutdown_timeout(options.shutdown_timeout.as_secs().max(1));
    if options.workers > 0 {
        server = server.workers(options.workers);
    }
    for listener in listeners {
        server = server.listen(listener)?;
    }
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(async move {
        drop(shutdown.wait_for(|stop| *stop).await);
        handle.stop(true).await;
    });
    Ok(server)
}
