//! `sessionAffinity: ClientIP` for one Service port: the endpoint each client IP last used, kept
//! for `timeoutSeconds` after its last new connection (the iptables `recent` match with
//! `--rcheck --seconds T --reap` and `--set`, `proxier.go::writeServiceToEndpointRules`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Entries are swept once the table has grown past this many since the last sweep.
const SWEEP_AT_LEAST: usize = 1024;

/// Client IP → the endpoint it sticks to.
#[derive(Debug)]
pub struct Affinity {
    timeout: Duration,
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<IpAddr, (SocketAddr, Instant)>,
    sweep_at: usize,
}

impl Affinity {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, inner: Mutex::new(Table { entries: HashMap::new(), sweep_at: SWEEP_AT_LEAST }) }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The endpoint `client` used within the timeout, if it is still among `endpoints`.
    pub fn lookup(&self, client: IpAddr, endpoints: &[SocketAddr]) -> Option<SocketAddr> {
        let table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (ep, at) = table.entries.get(&client)?;
        (at.elapsed() < self.timeout && endpoints.contains(ep)).then_some(*ep)
    }

    /// Records a new connection from `client` through `endpoint`, restarting its timeout.
    pub fn record(&self, client: IpAddr, endpoint: SocketAddr) {
        let mut table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        table.entries.insert(client, (endpoint, now));
        if table.entries.len() >= table.sweep_at {
            let timeout = self.timeout;
            table.entries.retain(|_, (_, at)| now.duration_since(*at) < timeout);
            table.sweep_at = (table.entries.len() * 2).max(SWEEP_AT_LEAST);
        }
    }

    /// Entries held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 80))
    }
    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9));

    #[tokio::test(start_paused = true)]
    async fn sticks_until_the_timeout_after_the_last_connection() {
        let a = Affinity::new(Duration::from_secs(10));
        let eps = [ep(1), ep(2)];
        assert_eq!(a.lookup(CLIENT, &eps), None);
        a.record(CLIENT, ep(2));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(a.lookup(CLIENT, &eps), Some(ep(2)));
        a.record(CLIENT, ep(2)); // a new connection refreshes the timestamp
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(a.lookup(CLIENT, &eps), Some(ep(2)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(a.lookup(CLIENT, &eps), None, "expired 10s after the last connection");
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_that_left_the_set_is_not_used() {
        let a = Affinity::new(Duration::from_secs(10));
        a.record(CLIENT, ep(2));
        assert_eq!(a.lookup(CLIENT, &[ep(1), ep(3)]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_as_the_table_grows() {
        let a = Affinity::new(Duration::from_secs(1));
        for i in 0..SWEEP_AT_LEAST as u32 - 1 {
            a.record(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)), ep(1));
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        a.record(CLIENT, ep(1));
        assert_eq!(a.len(), 1, "a flood of clients does not grow the table without bound");
    }
}
