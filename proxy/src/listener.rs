//! One listener's life: bind its address (retrying with backoff while another program holds it,
//! logging once), then serve TCP or UDP on the data path until the sync loop drops it. A failure
//! here concerns this listener only.

use crate::balance::Route;
use crate::connect::TcpConnect;
use crate::desired::{Listen, ServicePortName};
use crate::endpoints::Protocol;
use crate::events::Events;
use crate::runtime::DataPath;
use crate::udp::{self, UdpSettings};
use crate::{ListenerState, ListenerStatus};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
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
    /// The threads that accept and relay.
    pub data: DataPath,
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

/// Bound sockets, not yet registered with a runtime: each is registered on the data thread that
/// serves it.
enum Bound {
    /// One per data thread, sharing the address (`SO_REUSEPORT`).
    Tcp(Vec<std::net::TcpListener>),
    Udp(std::net::UdpSocket),
}

/// Aborts a task when dropped: the serving tasks on the data threads end with the listener.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run(listen: Listen, service: ServicePortName, route: watch::Receiver<Arc<Route>>, shared: Shared) {
    let mut delay = FIRST_RETRY;
    let mut failures = 0u32;
    let mut warned = false;
    // Held until this task ends, which returns the sockets to the budget.
    let sockets = match listen.protocol {
        Protocol::Tcp => shared.data.tcp_sockets(),
        _ => shared.data.one_socket(),
    };
    let bound = loop {
        match bind(listen, sockets.threads.len()) {
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
    let mut serving: Vec<AbortOnDrop> = match bound {
        Bound::Tcp(listeners) => listeners
            .into_iter()
            .zip(&sockets.threads)
            .map(|(socket, thread)| {
                let (route, connect, shutdown) = (route.clone(), shared.connect, shared.shutdown.clone());
                let serve = async move {
                    match TcpListener::from_std(socket) {
                        Ok(l) => crate::tcp::serve(l, listen, route, connect, shutdown).await,
                        Err(e) => tracing::error!(error = %e, "cannot serve the listening socket"),
                    }
                };
                AbortOnDrop(thread.spawn(serve.in_current_span()))
            })
            .collect(),
        Bound::Udp(socket) => {
            let serve = async move {
                match UdpSocket::from_std(socket) {
                    Ok(s) => udp::serve(s, listen, route, shared.udp).await,
                    Err(e) => tracing::error!(error = %e, "cannot serve the socket"),
                }
            };
            vec![AbortOnDrop(sockets.threads[0].spawn(serve.in_current_span()))]
        }
    };
    // Serving ends only when this task is dropped, which drops `serving` and so stops it.
    futures::future::join_all(serving.iter_mut().map(|t| &mut t.0)).await;
}

/// Binds `listen`: for TCP, `count` sockets sharing the address (`SO_REUSEPORT`, Linux only).
fn bind(listen: Listen, count: usize) -> io::Result<Bound> {
    match listen.protocol {
        Protocol::Tcp => {
            let count = count.max(1);
            if count > 1 {
                // `SO_REUSEPORT` would also let us join sockets of another program of this user
                // that set it (another kplane with the same Service CIDR), splitting connections
                // with it silently. A plain socket first: anyone holding the address makes it
                // fail, a conflict reported as any other. (Only a bind by another program
                // between this probe and ours, microseconds, can still slip in.)
                drop(bound_socket(listen.addr, false)?);
            }
            (0..count).map(|_| tcp_socket(listen.addr, count > 1)).collect::<io::Result<_>>().map(Bound::Tcp)
        }
        Protocol::Udp => {
            let socket = std::net::UdpSocket::bind(listen.addr)?;
            socket.set_nonblocking(true)?;
            Ok(Bound::Udp(socket))
        }
        Protocol::Sctp => Err(io::Error::new(io::ErrorKind::Unsupported, "SCTP is not proxied")),
    }
}

/// A non-blocking listening socket on `addr`.
fn tcp_socket(addr: SocketAddr, shared: bool) -> io::Result<std::net::TcpListener> {
    let socket = bound_socket(addr, shared)?;
    socket.listen(BACKLOG as i32)?;
    Ok(socket.into())
}

/// A non-blocking TCP socket bound to `addr`, not listening (so a probe takes no connection).
/// With `shared` (`SO_REUSEPORT`), further sockets of this user that set it too may bind the
/// same address.
fn bound_socket(addr: SocketAddr, shared: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    // Rebinding right after a close must not wait out TIME_WAIT.
    socket.set_reuse_address(true)?;
    #[cfg(target_os = "linux")]
    if shared {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = shared;
    socket.bind(&addr.into())?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(addr: SocketAddr) -> Listen {
        Listen { addr, protocol: Protocol::Tcp }
    }

    /// A socket per data thread shares the address; another program's socket on it (without
    /// `SO_REUSEPORT`) still makes the bind fail, so conflicts are seen.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_socket_per_thread_and_conflicts_still_seen() {
        let Ok(Bound::Tcp(sockets)) = bind(tcp("127.0.0.1:0".parse().expect("addr")), 1) else { panic!("bound") };
        let addr = sockets[0].local_addr().expect("addr");
        drop(sockets);
        let Ok(Bound::Tcp(sockets)) = bind(tcp(addr), 3) else { panic!("three sockets on {addr}") };
        assert_eq!(sockets.len(), 3);
        assert!(sockets.iter().all(|s| s.local_addr().ok() == Some(addr)));
        let err = std::net::TcpListener::bind(addr).expect_err("the address is the proxy's");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(sockets);

        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("another program");
        let taken = other.local_addr().expect("addr");
        let err = bind(tcp(taken), 2).err().expect("taken by another program");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);

        // Another kplane (sockets with SO_REUSEPORT) is a conflict too, not a group to join.
        let Ok(Bound::Tcp(theirs)) = bind(tcp("127.0.0.1:0".parse().expect("addr")), 2) else { panic!("bound") };
        let shared = theirs[0].local_addr().expect("addr");
        let err = bind(tcp(shared), 2).err().expect("held by another proxy");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
