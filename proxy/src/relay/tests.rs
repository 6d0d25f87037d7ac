//! The relay over real loopback sockets: client ⇄ relay ⇄ backend.

use super::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(20);

/// The byte at `offset` of a test stream `seed`: order and content both checkable.
fn byte(seed: u64, offset: u64) -> u8 {
    let x = (offset ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

/// Writes `len` bytes of stream `seed` in uneven chunks, then half-closes.
async fn send(w: &mut (impl AsyncWriteExt + Unpin), seed: u64, len: u64) -> io::Result<()> {
    let mut offset = 0u64;
    let mut chunk = 1usize;
    while offset < len {
        let n = (chunk as u64).min(len - offset);
        let data: Vec<u8> = (offset..offset + n).map(|o| byte(seed, o)).collect();
        w.write_all(&data).await?;
        offset += n;
        chunk = chunk * 3 % 300_007 + 1; // from 1 byte to ~300 KiB
    }
    w.shutdown().await
}

/// Reads to the end, checking each byte against stream `seed`; the count.
async fn receive(r: &mut (impl AsyncReadExt + Unpin), seed: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 100_000];
    let mut offset = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(offset);
        }
        for b in &buf[..n] {
            assert_eq!(*b, byte(seed, offset), "byte {offset} of stream {seed}");
            offset += 1;
        }
    }
}

/// A relay in front of a backend listener: (the client's address, the backend listener, the
/// relay task).
async fn relay_to() -> (SocketAddr, TcpListener, JoinHandle<io::Result<Moved>>) {
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let back = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (front_addr, back_addr) = (front.local_addr().expect("addr"), back.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let (mut client, _) = front.accept().await?;
        let mut backend = TcpStream::connect(back_addr).await?;
        relay(&mut client, &mut backend).await
    });
    (front_addr, back, task)
}

async fn both_ways(len: u64) {
    let (addr, back, relay_task) = relay_to().await;
    let client = TcpStream::connect(addr).await.expect("connect");
    let (backend, _) = back.accept().await.expect("accept");
    let backend_side = tokio::spawn(async move {
        let (mut r, mut w) = backend.into_split();
        let (got, sent) = tokio::join!(receive(&mut r, 1), send(&mut w, 2, len));
        sent.expect("backend sends");
        got.expect("backend receives")
    });
    let (mut r, mut w) = client.into_split();
    let (got, sent) =
        timeout(DEADLINE, async { tokio::join!(receive(&mut r, 2), send(&mut w, 1, len)) }).await.expect("in time");
    sent.expect("client sends");
    assert_eq!(got.expect("client receives"), len, "everything the backend sent");
    assert_eq!(timeout(DEADLINE, backend_side).await.expect("in time").expect("backend"), len);
    let moved = timeout(DEADLINE, relay_task).await.expect("relay ends").expect("task").expect("relay");
    assert_eq!(moved, (len, len));
}

#[tokio::test]
async fn large_transfers_both_ways_arrive_whole_and_in_order() {
    let before = splice::SPLICED.load(std::sync::atomic::Ordering::Relaxed);
    both_ways(64 << 20).await;
    // Most of it went through pipes (the first buffer of each direction is copied).
    let spliced = splice::SPLICED.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(spliced >= 2 * (64 << 20) - 2 * BUF as u64, "only {spliced} bytes spliced");
}

#[tokio::test]
async fn small_transfers_both_ways() {
    for len in [0, 1, BUF as u64 - 1, BUF as u64, BUF as u64 + 1] {
        both_ways(len).await;
    }
}

/// Request, half-close, then the answer: the end of data is passed on and the other way stays
/// open, whether the request went through the buffer or through splice.
#[tokio::test]
async fn half_close_is_passed_on() {
    for len in [5u64, 8 << 20] {
        let (addr, back, relay_task) = relay_to().await;
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (backend, _) = back.accept().await.expect("accept");
        let backend_side = tokio::spawn(async move {
            let (mut r, mut w) = backend.into_split();
            let got = receive(&mut r, 3).await.expect("backend reads to the end");
            // Only after the client's end of data: answer with the count.
            w.write_all(format!("{got}").as_bytes()).await.expect("answer");
        });
        let (mut r, mut w) = client.split();
        send(&mut w, 3, len).await.expect("send");
        let mut answer = String::new();
        timeout(DEADLINE, r.read_to_string(&mut answer)).await.expect("in time").expect("read");
        assert_eq!(answer, len.to_string());
        backend_side.await.expect("backend");
        assert_eq!(
            timeout(DEADLINE, relay_task).await.expect("ends").expect("task").expect("relay"),
            (len, answer.len() as u64)
        );
    }
}

/// A backend that resets mid-stream: the client sees a reset, not a clean end of data.
#[tokio::test]
async fn a_backend_reset_reaches_the_client() {
    for len in [100usize, 4 << 20] {
        let (addr, back, relay_task) = relay_to().await;
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (mut backend, _) = back.accept().await.expect("accept");
        backend.write_all(&vec![1u8; len]).await.expect("backend writes");
        // Read by the relay (and passed on) before the reset.
        let mut got = vec![0u8; len];
        timeout(DEADLINE, client.read_exact(&mut got)).await.expect("in time").expect("data arrives");
        backend.set_zero_linger().expect("linger");
        drop(backend);
        let end = timeout(DEADLINE, client.read(&mut [0u8; 16])).await.expect("in time");
        assert_eq!(end.as_ref().map_err(|e| e.kind()).err(), Some(io::ErrorKind::ConnectionReset), "{end:?}");
        assert!(timeout(DEADLINE, relay_task).await.expect("ends").expect("task").is_err());
    }
}

/// A client that aborts mid-upload: the backend sees a reset and the relay ends.
#[tokio::test]
async fn a_client_abort_reaches_the_backend() {
    let (addr, back, relay_task) = relay_to().await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let (mut backend, _) = back.accept().await.expect("accept");
    let data = vec![2u8; 2 << 20];
    client.write_all(&data).await.expect("client writes");
    let mut got = vec![0u8; data.len()];
    timeout(DEADLINE, backend.read_exact(&mut got)).await.expect("in time").expect("data arrives");
    client.set_zero_linger().expect("linger");
    drop(client);
    let end = timeout(DEADLINE, backend.read(&mut [0u8; 16])).await.expect("in time");
    assert_eq!(end.as_ref().map_err(|e| e.kind()).err(), Some(io::ErrorKind::ConnectionReset), "{end:?}");
    assert!(timeout(DEADLINE, relay_task).await.expect("ends").expect("task").is_err());
}

/// A client that never reads holds back its backend after a bounded amount, while its own
/// requests still pass.
#[tokio::test]
async fn a_client_that_never_reads_is_held_to_bounded_buffering() {
    let (addr, back, _relay_task) = relay_to().await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let (mut backend, _) = back.accept().await.expect("accept");
    let chunk = vec![3u8; 1 << 20];
    let mut written = 0usize;
    // Writes stop completing once the socket buffers and the pipe are full.
    while let Ok(done) = timeout(Duration::from_millis(500), backend.write_all(&chunk)).await {
        done.expect("backend writes");
        written += chunk.len();
        assert!(written < 64 << 20, "{written} bytes buffered for a client that does not read");
    }
    client.write_all(b"still here").await.expect("client writes");
    let mut got = [0u8; 10];
    timeout(DEADLINE, backend.read_exact(&mut got)).await.expect("in time").expect("backend reads");
    assert_eq!(&got, b"still here");
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Throughput and the relay's CPU per GiB, splice vs copy vs direct, each side on its own thread:
/// `cargo test --release -p kplane-proxy --lib relay_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn relay_cost() {
    const LEN: u64 = 2 << 30;
    for mode in ["direct", "copy", "splice", "direct", "copy", "splice"] {
        let sink = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let sink_addr = sink.local_addr().expect("addr");
        let receiver = std::thread::spawn(move || {
            use std::io::Read;
            let (mut s, _) = sink.accept().expect("accept");
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            let start = thread_cpu();
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            (total, thread_cpu() - start)
        });
        let front = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = if mode == "direct" { sink_addr } else { front.local_addr().expect("addr") };
        let relay_thread = (mode != "direct").then(|| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
                rt.block_on(async move {
                    front.set_nonblocking(true).expect("nonblocking");
                    let front = TcpListener::from_std(front).expect("listener");
                    let (mut client, _) = front.accept().await.expect("accept");
                    let mut backend = TcpStream::connect(sink_addr).await.expect("connect");
                    let start = thread_cpu();
                    relay_with(&mut client, &mut backend, mode == "splice").await.expect("relay");
                    thread_cpu() - start
                })
            })
        });
        let start = std::time::Instant::now();
        let sender_start = thread_cpu();
        {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(target).expect("connect");
            let chunk = vec![7u8; 256 * 1024];
            let mut sent = 0;
            while sent < LEN {
                s.write_all(&chunk).expect("write");
                sent += chunk.len() as u64;
            }
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let _ = std::io::Read::read(&mut s, &mut [0u8; 1]);
        }
        let sender_cpu = thread_cpu() - sender_start;
        let (received, receiver_cpu) = receiver.join().expect("receiver");
        assert_eq!(received, LEN);
        let secs = start.elapsed().as_secs_f64();
        let cpu = relay_thread.map(|t| t.join().expect("relay")).unwrap_or_default();
        let per_gib = |d: Duration| d.as_secs_f64() * 1000.0 / (LEN as f64 / f64::from(1u32 << 30));
        println!(
            "{mode:>6}: {:.0} MB/s; CPU ms per GiB: relay {:.0}, sender {:.0}, receiver {:.0}",
            LEN as f64 / secs / 1e6,
            per_gib(cpu),
            per_gib(sender_cpu),
            per_gib(receiver_cpu)
        );
    }
}
