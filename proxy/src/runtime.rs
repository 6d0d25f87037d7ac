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
    /// Where the next single-socket listener (UDP) goes.
    next: Arc<AtomicUsize>,
}

impl DataPath {
    /// A data path of the current runtime alone (tests).
    #[cfg(test)]
    pub(crate) fn current() -> Self {
        Self { threads: Arc::from([Handle::current()]), next: Arc::default() }
    }

    /// Every data thread, for a listener with a socket on each.
    pub(crate) fn threads(&self) -> &[Handle] {
        &self.threads
    }

    /// One data thread, in turn, for a listener with a single socket.
    pub(crate) fn one(&self) -> &Handle {
        &self.threads[self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len()]
    }
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
        let data = DataPath { threads: threads.into(), next: Arc::default() };
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
