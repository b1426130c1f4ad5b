//! The caller's address, as the connection shows it: what failed client
//! authentications are counted by. Forwarding headers (`X-Forwarded-For`,
//! `Forwarded`) are not read: any caller can write them, so trusting them
//! would let one caller spread its failures over made-up addresses, or
//! spend someone else's budget. Behind a proxy, every caller shares the
//! proxy's address (docs/limits.md).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::listener::AcceptedListener;

/// The connection's remote address, from either listener (axum provides
/// `SocketAddr` for its own `TcpListener` only).
#[derive(Clone, Copy, Debug)]
pub struct PeerSocket(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for PeerSocket {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        PeerSocket(*stream.remote_addr())
    }
}

impl<IO> Connected<IncomingStream<'_, AcceptedListener<IO>>> for PeerSocket
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn connect_info(stream: IncomingStream<'_, AcceptedListener<IO>>) -> Self {
        PeerSocket(*stream.remote_addr())
    }
}

/// `None` when the router is not served with connect info (in-process
/// tests), which the domain does not throttle.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddress(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddress(
            parts
                .extensions
                .get::<ConnectInfo<PeerSocket>>()
                .map(|info| info.0.0.ip()),
        ))
    }
}
