//! A listener fed with connections accepted (and handshaken) elsewhere:
//! how HTTP is served over TLS, the TLS acceptor living with the binary's
//! certificate reloading.

use std::io;
use std::net::SocketAddr;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

pub struct AcceptedListener<IO> {
    connections: mpsc::Receiver<(IO, SocketAddr)>,
    local: SocketAddr,
}

impl<IO> AcceptedListener<IO> {
    /// `local` is the address the connections were accepted on.
    pub fn new(connections: mpsc::Receiver<(IO, SocketAddr)>, local: SocketAddr) -> Self {
        AcceptedListener { connections, local }
    }
}

impl<IO> Listener for AcceptedListener<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Io = IO;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (IO, SocketAddr) {
        match self.connections.recv().await {
            Some(accepted) => accepted,
            // The acceptor stopped (shutdown): nothing more will come, and
            // axum's graceful shutdown ends the serve loop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
