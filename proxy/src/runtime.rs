//! The proxy's threads: a control runtime (watches, the sync loop, health checks) and a data path
//! of one single-threaded runtime per core. Each TCP listener has a socket per data thread
//! (`SO_REUSEPORT`, so the kernel spreads new connections), and a connection stays on the thread
//! that accepted it: no work stealing, no cross-thread wake-ups on the hot path (haproxy's model).

use crate::ProxyError;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The data path's threads; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct DataPath {
    threads: Arc<[Handle]>,
    /// Where the next listener's first socket goes, so single-socket listeners spread.
    next: Arc<AtomicUsize>,
    sockets: Arc<SocketBudget>,
}

/// Listening sockets beyond one per listener cost a file descriptor each: with tens of thousands
/// of Services, a socket per thread would not fit the open-file limit. So a TCP listener gets a
/// socket per thread while all listeners' sockets stay within a quarter of the limit, then one.
#[derive(Debug)]
struct SocketBudget {
    held: AtomicUsize,
    max: usize,
}

/// The listening sockets one listener holds against the budget; returned when dropped.
#[derive(Debug)]
pub(crate) struct Sockets {
    pub(crate) threads: Vec<Handle>,
    budget: Arc<SocketBudget>,
}

impl Drop for Sockets {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.threads.len(), Ordering::Relaxed);
    }
}

impl DataPath {
    fn new(threads: Vec<Handle>, max_sockets: usize) -> Self {
        let sockets = Arc::new(SocketBudget { held: AtomicUsize::new(0), max: max_sockets });
        Self { threads: threads.into(), next: Arc::default(), sockets }
    }

    /// A data path of the current runtime alone (tests).
    #[cfg(test)]
    pub(crate) fn current() -> Self {
        Self::new(vec![Handle::current()], usize::MAX)
    }

    /// The threads a new TCP listener serves on, a socket each: all of them on Linux (where
    /// `SO_REUSEPORT` spreads connections over the sockets) while the budget allows, else one.
    pub(crate) fn tcp_sockets(&self) -> Sockets {
        let all = if cfg!(target_os = "linux") { self.threads.len() } else { 1 };
        let fits = |held: usize| (held + all <= self.sockets.max).then_some(held + all);
        let per_thread = all > 1 && self.sockets.held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, fits).is_ok();
        if per_thread { self.take(all) } else { self.one_socket() }
    }

    /// One data thread, in turn, for a listener with a single socket (UDP, or past the budget).
    pub(crate) fn one_socket(&self) -> Sockets {
        self.sockets.held.fetch_add(1, Ordering::Relaxed);
        self.take(1)
    }

    /// `count` distinct threads, starting with the next in turn, already counted in the budget.
    fn take(&self, count: usize) -> Sockets {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.threads.len();
        let threads = (0..count.min(n)).map(|i| self.threads[(start + i) % n].clone()).collect();
        Sockets { threads, budget: self.sockets.clone() }
    }
}

/// The soft open-file limit, first raised to the hard limit as Go programs (kube-proxy among
/// them) do at start: a proxy holds a socket per Service port.
fn open_file_limit() -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return 1024;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    }
    #[cfg(not(unix))]
    usize::MAX
}

/// Owns the proxy's threads; dropping it stops them, ending every connection. They are the
/// proxy's own, so a control-plane task that holds a worker of the embedding runtime for a while
/// (a controller digesting a burst) does not hold up Service traffic or route changes; the OS
/// shares the CPUs between them preemptively, as between kube-proxy and other processes.
pub(crate) struct ProxyRuntime {
    control: Option<tokio::runtime::Runtime>,
    data: DataPath,
    /// Dropped to tell each data thread to stop.
    _stop: Vec<oneshot::Sender<()>>,
}

impl ProxyRuntime {
    /// A control worker and a data thread per CPU (at most 8).
    pub(crate) fn new() -> Result<Self, ProxyError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
        let control = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kplane-proxy")
            .enable_all()
            .build()
            .map_err(ProxyError::Runtime)?;
        let mut threads = Vec::with_capacity(cores);
        let mut stop = Vec::with_capacity(cores);
        for i in 0..cores {
            let (handle, stop_tx) = data_thread(i)?;
            threads.push(handle);
            stop.push(stop_tx);
        }
        let data = DataPath::new(threads, open_file_limit() / 4);
        Ok(Self { control: Some(control), data, _stop: stop })
    }

    pub(crate) fn handle(&self) -> &Handle {
        match &self.control {
            Some(rt) => rt.handle(),
            None => unreachable!("the runtime is only taken on drop"),
        }
    }

    pub(crate) fn data(&self) -> &DataPath {
        &self.data
    }
}

impl Drop for ProxyRuntime {
    /// Without waiting for its tasks: a runtime may be dropped from async code only this way.
    fn drop(&mut self) {
        if let Some(rt) = self.control.take() {
            rt.shutdown_background();
        }
    }
}

/// Starts data thread `i` (named `kplane-proxy-io`): a single-threaded runtime that runs until
/// the returned sender is dropped, then drops its tasks.
fn data_thread(i: usize) -> Result<(Handle, oneshot::Sender<()>), ProxyError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ProxyError::Runtime)?;
    let handle = runtime.handle().clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("kplane-proxy-io".into())
        .spawn(move || {
            let _ = runtime.block_on(stop_rx);
            tracing::debug!(thread = i, "proxy data thread stopped");
        })
        .map_err(ProxyError::Runtime)?;
    Ok((handle, stop_tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Listeners get a socket per thread until the budget is used, then one each; dropped
    /// listeners give theirs back.
    #[tokio::test]
    async fn sockets_per_thread_within_the_budget() {
        let data = DataPath::new(vec![Handle::current(), Handle::current()], 5);
        let per_thread = if cfg!(target_os = "linux") { 2 } else { 1 };
        let a = data.tcp_sockets();
        let b = data.tcp_sockets();
        assert_eq!((a.threads.len(), b.threads.len()), (per_thread, per_thread));
        let c = data.tcp_sockets();
        assert_eq!(c.threads.len(), 1, "over the budget: one socket");
        let udp = data.one_socket();
        assert_eq!(udp.threads.len(), 1);
        drop((a, b));
        assert_eq!(data.tcp_sockets().threads.len(), per_thread, "returned sockets are reused");
        drop((c, udp));
        assert_eq!(data.sockets.held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_open_file_limit_is_read() {
        assert!(open_file_limit() >= 64);
    }
}
