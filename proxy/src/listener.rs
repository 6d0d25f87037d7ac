//! One listener's life: bind its address (retrying with backoff while another program holds it,
//! logging once), then serve TCP or UDP until the sync loop drops it. A failure here concerns
//! this listener only.

use crate::balance::Route;
use crate::connect::TcpConnect;
use crate::desired::{Listen, ServicePortName};
use crate::endpoints::Protocol;
use crate::events::Events;
use crate::udp::{self, UdpSettings};
use crate::{ListenerState, ListenerStatus};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::sync::watch;
use tracing::Instrument;

const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Retries while the address is in use stop growing here, so a freed port is taken soon.
const MAX_RETRY_IN_USE: Duration = Duration::from_secs(2);
/// Retries for errors that rarely go away by themselves (no such address, no permission).
const MAX_RETRY_OTHER: Duration = Duration::from_secs(30);
const BACKLOG: u32 = 1024;
/// Failed attempts on an address in use before a warning (about 0.7 s).
const WARN_IN_USE_AFTER: u32 = 3;

/// What every listener of a proxy shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub connect: TcpConnect,
    pub udp: UdpSettings,
    /// Changes (to closed) when the proxy stops; open connections end then.
    pub shutdown: watch::Receiver<()>,
    pub status: Arc<Mutex<BTreeMap<Listen, ListenerStatus>>>,
    /// Where a lasting failure to listen is reported (an Event on the Service).
    pub events: Option<Events>,
}

/// A running listener; dropping it closes the socket (open TCP connections carry on).
pub(crate) struct Listener {
    listen: Listen,
    task: tokio::task::JoinHandle<()>,
    status: Arc<Mutex<BTreeMap<Listen, ListenerStatus>>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
        self.status.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.listen);
    }
}

impl Listener {
    /// The task serving this listener (the same while the listener is kept).
    #[cfg(test)]
    pub(crate) fn task_id(&self) -> tokio::task::Id {
        self.task.id()
    }

    pub(crate) fn spawn(listen: Listen, route: watch::Receiver<Arc<Route>>, shared: &Shared) -> Self {
        let service = route.borrow().service.clone();
        let entry = ListenerStatus { listen, service: service.clone(), state: ListenerState::Binding { error: None } };
        shared.status.lock().unwrap_or_else(|e| e.into_inner()).insert(listen, entry);
        let span = tracing::info_span!("listener", %listen, %service);
        let task = tokio::spawn(run(listen, service.clone(), route, shared.clone()).instrument(span));
        Self { listen, task, status: shared.status.clone() }
    }
}

/// Updates this listener's entry; one already removed (the listener dropped) stays removed.
fn set_status(status: &Mutex<BTreeMap<Listen, ListenerStatus>>, listen: Listen, state: ListenerState) {
    if let Some(entry) = status.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&listen) {
        entry.state = state;
    }
}

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

async fn run(listen: Listen, service: ServicePortName, route: watch::Receiver<Arc<Route>>, shared: Shared) {
    let mut delay = FIRST_RETRY;
    let mut failures = 0u32;
    let mut warned = false;
    let bound = loop {
        match bind(listen).await {
            Ok(b) => break b,
            Err(e) => {
                failures += 1;
                let in_use = e.kind() == io::ErrorKind::AddrInUse;
                // A listener just closed for the same address may still be going away: only a
                // lasting conflict is worth a warning.
                if !warned && (!in_use || failures >= WARN_IN_USE_AFTER) {
                    let note = format!("cannot listen on {listen} for {service}: {e}; retrying");
                    match &shared.events {
                        Some(events) => events.warn(&service.namespace, &service.name, "FailedToListen", note),
                        None => tracing::warn!("{note}"),
                    }
                    warned = true;
                } else {
                    tracing::debug!(error = %e, failures, "cannot listen yet");
                }
                set_status(&shared.status, listen, ListenerState::Binding { error: Some(e.to_string()) });
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(if in_use { MAX_RETRY_IN_USE } else { MAX_RETRY_OTHER });
            }
        }
    };
    if warned {
        tracing::info!(failures, "listening after retries");
    } else {
        tracing::debug!("listening");
    }
    set_status(&shared.status, listen, ListenerState::Listening);
    match bound {
        Bound::Tcp(l) => crate::tcp::serve(l, listen, route, shared.connect, shared.shutdown).await,
        Bound::Udp(s) => udp::serve(s, listen, route, shared.udp).await,
    }
}

async fn bind(listen: Listen) -> io::Result<Bound> {
    match listen.protocol {
        Protocol::Tcp => {
            let socket = match listen.addr {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            // Rebinding right after a close must not wait out TIME_WAIT.
            socket.set_reuseaddr(true)?;
            socket.bind(listen.addr)?;
            Ok(Bound::Tcp(socket.listen(BACKLOG)?))
        }
        Protocol::Udp => Ok(Bound::Udp(UdpSocket::bind(listen.addr).await?)),
        Protocol::Sctp => Err(io::Error::new(io::ErrorKind::Unsupported, "SCTP is not proxied")),
    }
}
