//! The UDP side: one thread per core, each in its own receive loop on the server's socket (no task
//! or channel per query). A question with a prepared answer ([`Prepared`]) is answered
//! in the loop: hickory decodes the header, question and OPT record, the reply is the request's
//! header and question followed by the prepared sections and hickory's OPT record. Everything
//! else is decoded as hickory-server decodes it and goes through the [`Handler`] (answered in the
//! loop, or on the runtime when the upstreams have a part), encoded as hickory-server encodes UDP
//! replies (truncated with TC beyond the client's size).
//!
//! [`Prepared`]: crate::prepared::Prepared

use crate::server::{self, Handler, Local};
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::{DNSClass, Record};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::server::Request;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often an idle worker looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// Largest datagram accepted.
const MAX_DATAGRAM: usize = 65535;
/// Workers at most (one per core up to this).
const MAX_WORKERS: usize = 4;

/// The receive loops; dropping stops them (within [`POLL`]).
pub struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Serve `socket` with `handler` from one thread per core; forwarded questions run on the
    /// current tokio runtime.
    pub fn start(socket: tokio::net::UdpSocket, handler: Arc<Handler>) -> std::io::Result<Self> {
        let socket = socket.into_std()?;
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(POLL))?;
        let socket = Arc::new(socket);
        let runtime = tokio::runtime::Handle::current();
        let stop = Arc::new(AtomicBool::new(false));
        let count = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_WORKERS);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let (socket, handler, stop, runtime) = (socket.clone(), handler.clone(), stop.clone(), runtime.clone());
            let thread = std::thread::Builder::new()
                .name(format!("kplane-dns-udp-{i}"))
                .spawn(move || serve(&socket, &handler, &stop, &runtime))?;
            threads.push(thread);
        }
        Ok(Workers { stop, threads })
    }

    /// Stop and wait for the loops to end (the socket closes with the last).
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One receive loop.
fn serve(socket: &Arc<UdpSocket>, handler: &Arc<Handler>, stop: &AtomicBool, runtime: &tokio::runtime::Handle) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let (n, src) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "dns: UDP receive failed");
                continue;
            }
        };
        if !answerable(src) {
            continue;
        }
        let packet = &buf[..n];
        if prepared(handler, packet, &mut out).is_some() {
            send(socket, &out, src);
        } else {
            general(socket, handler, runtime, packet, src);
        }
    }
}

fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, to) {
        tracing::debug!(error = %e, %to, "dns: UDP send failed");
    }
}

/// hickory-server's `sanitize_src_address`: no replies to port 0, unspecified or broadcast addresses.
fn answerable(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(ip) => !ip.is_unspecified() && !ip.is_broadcast(),
            IpAddr::V6(ip) => !ip.is_unspecified(),
        }
}

/// The reply from a prepared answer, into `out`; `None` when the request is anything but a plain
/// query with a prepared answer that fits the client's size.
fn prepared(handler: &Handler, packet: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut decoder = BinDecoder::new(packet);
    let header = Header::read(&mut decoder).ok()?;
    let (metadata, counts) = (header.metadata, header.counts);
    if metadata.message_type != MessageType::Query
        || metadata.op_code != OpCode::Query
        || counts.queries != 1
        || counts.answers != 0
        || counts.authorities != 0
        || counts.additionals > 1
    {
        return None;
    }
    let query = Query::read(&mut decoder).ok()?;
    let question_end = decoder.index();
    if query.query_class() != DNSClass::IN {
        return None;
    }
    let edns = if counts.additionals == 1 {
        let (records, edns, signature) = Message::read_records(&mut decoder, 1, true, OpCode::Query).ok()?;
        if !records.is_empty() || signature.is_some() {
            return None;
        }
        Some(edns.filter(|e| e.version() == 0)?)
    } else {
        None
    };
    let max = edns.as_ref().map_or(512, |e| e.max_payload().max(512));
    let served = handler.zone.read();
    let answer = served.prepared.get(query.name(), query.query_type())?;
    if question_end - 12 != answer.question_len {
        return None;
    }
    let mut reply = Metadata::response_from_request(&metadata);
    reply.authoritative = true;
    let counts = HeaderCounts {
        queries: 1,
        answers: answer.counts.answers,
        authorities: answer.counts.authorities,
        additionals: answer.counts.additionals + u16::from(edns.is_some()),
    };
    out.clear();
    let mut encoder = BinEncoder::new(out);
    Header { metadata: reply, counts }.emit(&mut encoder).ok()?;
    // The question as asked: the answers' owner names point at it, so they keep its spelling.
    encoder.emit_vec(&packet[12..question_end]).ok()?;
    encoder.emit_vec(&answer.body).ok()?;
    drop(served);
    if let Some(request) = edns {
        let mut edns = Edns::new();
        edns.set_max_payload(max);
        edns.set_dnssec_ok(request.flags().dnssec_ok);
        Record::from(&edns).emit(&mut encoder).ok()?;
    }
    (out.len() <= usize::from(max)).then_some(())
}

/// Any other datagram, as hickory-server treats it: silence without a header, FORMERR when the rest
/// does not decode, silence for responses; else the handler's answer.
fn general(
    socket: &Arc<UdpSocket>,
    handler: &Arc<Handler>,
    runtime: &tokio::runtime::Handle,
    packet: &[u8],
    src: SocketAddr,
) {
    let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else { return };
    let request = match Request::from_bytes(packet.to_vec(), src, Protocol::Udp) {
        Ok(request) => request,
        Err(_) => {
            let mut metadata = Metadata::response_from_request(&header.metadata);
            metadata.response_code = ResponseCode::FormErr;
            send(socket, &server::header_only(metadata), src);
            return;
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return;
    }
    match handler.local(&request) {
        Local::Done(response) => send(socket, &server::encode_udp(&request, &response), src),
        local => {
            let (socket, handler) = (socket.clone(), handler.clone());
            runtime.spawn(async move {
                let response = handler.finish(&request, local).await;
                send(&socket, &server::encode_udp(&request, &response), src);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ClusterData;
    use crate::forward::Upstreams;
    use crate::prepared::LiveZone;
    use crate::zone::{Zone, ZoneConfig};
    use hickory_server::proto::rr::{Name, RecordType};
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("fixture")
    }

    fn handler() -> Handler {
        let services: Vec<k8s_openapi::api::core::v1::Service> = vec![
            obj(json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": {"clusterIP": "10.0.0.1",
                "ports": [{"name": "http", "protocol": "TCP", "port": 80}, {"name": "dns", "protocol": "UDP", "port": 53}]}})),
            obj(json!({"metadata": {"name": "hdls", "namespace": "ns"}, "spec": {"clusterIP": "None",
                "ports": [{"name": "http", "protocol": "TCP", "port": 80}]}})),
            obj(json!({"metadata": {"name": "big", "namespace": "ns"}, "spec": {"clusterIP": "None"}})),
        ];
        let endpoints = |n: u8| -> Vec<serde_json::Value> {
            (1..=n).map(|i| json!({"addresses": [format!("172.0.0.{i}")], "hostname": format!("host-{i}")})).collect()
        };
        let slices: Vec<k8s_openapi::api::discovery::v1::EndpointSlice> = vec![
            obj(
                json!({"metadata": {"name": "hdls-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "hdls"}},
                "addressType": "IPv4", "ports": [{"name": "http", "protocol": "TCP", "port": 80}], "endpoints": endpoints(3)}),
            ),
            obj(
                json!({"metadata": {"name": "big-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "big"}},
                "addressType": "IPv4", "ports": [], "endpoints": endpoints(60)}),
            ),
        ];
        let namespaces: Vec<k8s_openapi::api::core::v1::Namespace> = vec![obj(json!({"metadata": {"name": "ns"}}))];
        let data = ClusterData::build(&services, &slices, &[], &namespaces);
        let config = ZoneConfig { domain: "cluster.local".into(), ttl: 5, local_addrs: vec![] };
        Handler::new(Arc::new(LiveZone::new(Zone::new(&config, data, 7, true))), Upstreams::new(vec![]))
    }

    fn query(name: &str, rtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x4242;
        m.metadata.recursion_desired = true;
        m.metadata.checking_disabled = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
        if let Some((size, dnssec_ok)) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            e.set_dnssec_ok(dnssec_ok);
            m.set_edns(e);
        }
        m.to_vec().expect("encode")
    }

    /// The general path's reply to `bytes`.
    fn general_reply(handler: &Handler, bytes: &[u8]) -> Vec<u8> {
        let request = Request::from_bytes(bytes.to_vec(), "127.0.0.1:5353".parse().expect("addr"), Protocol::Udp)
            .expect("decodes");
        let Local::Done(response) = handler.local(&request) else { panic!("a zone answer") };
        server::encode_udp(&request, &response)
    }

    /// Sections as zone-file lines, answer owners as spelled, other names in lower case (the
    /// additional records' owners may be spelled as the question where they are compressed to it).
    fn lines(bytes: &[u8]) -> (Metadata, Vec<String>) {
        let m = Message::from_vec(bytes).expect("valid reply");
        let mut lines: Vec<String> = m.queries.iter().map(|q| format!("Q {q}")).collect();
        for (section, records) in [("AN", &m.answers), ("NS", &m.authorities), ("AR", &m.additionals)] {
            for r in records {
                let owner = if section == "AN" { r.name.to_string() } else { String::new() };
                lines.push(format!("{section} {owner} {}", r.to_string().to_ascii_lowercase()));
            }
        }
        lines.push(format!("EDNS {:?}", m.edns.map(|e| (e.max_payload(), e.flags().dnssec_ok, e.version()))));
        (m.metadata, lines)
    }

    #[test]
    fn prepared_replies_are_the_general_replies() {
        let handler = handler();
        let names = [
            ("web.ns.svc.cluster.local.", RecordType::A),
            ("WEB.Ns.svc.Cluster.LOCAL.", RecordType::A),
            ("web.ns.svc.cluster.local.", RecordType::SRV),
            ("_HTTP._tcp.Web.ns.svc.cluster.local.", RecordType::SRV),
            ("_dns._udp.web.ns.svc.cluster.local.", RecordType::A),
            ("hdls.ns.svc.cluster.local.", RecordType::A),
            ("Hdls.NS.svc.cluster.local.", RecordType::SRV),
            ("host-2.hdls.ns.svc.cluster.local.", RecordType::A),
        ];
        let mut out = Vec::new();
        for (name, rtype) in names {
            for edns in [None, Some((512, false)), Some((1232, true)), Some((100, false))] {
                let bytes = query(name, rtype, edns);
                prepared(&handler, &bytes, &mut out).unwrap_or_else(|| panic!("{name} {rtype} {edns:?}: prepared"));
                let general = general_reply(&handler, &bytes);
                assert_eq!(lines(&out), lines(&general), "{name} {rtype} {edns:?}");
                assert!(lines(&out).1.iter().any(|l| l.starts_with(&format!("AN {name}"))), "{name}: owner as asked");
            }
        }
    }

    #[test]
    fn other_requests_take_the_general_path() {
        let handler = handler();
        let mut out = Vec::new();
        let none = |bytes: &[u8], what: &str| assert!(prepared(&handler, bytes, &mut Vec::new()).is_none(), "{what}");
        // Negative answers, NODATA, names that are not prepared.
        none(&query("nope.ns.svc.cluster.local.", RecordType::A, None), "NXDOMAIN");
        none(&query("web.ns.svc.cluster.local.", RecordType::AAAA, None), "NODATA");
        none(&query("web.ns.svc.cluster.local.", RecordType::TXT, None), "TXT");
        none(&query("example.test.", RecordType::A, None), "forwarded");
        // 60 addresses do not fit 512 bytes: the general path truncates; with room, prepared.
        let big = "big.ns.svc.cluster.local.";
        none(&query(big, RecordType::A, None), "too big without EDNS");
        let general = Message::from_vec(&general_reply(&handler, &query(big, RecordType::A, None))).expect("reply");
        assert!(general.metadata.truncation);
        assert!(prepared(&handler, &query(big, RecordType::A, Some((4096, false))), &mut out).is_some());
        // Not plain queries.
        let mut bytes = query("web.ns.svc.cluster.local.", RecordType::A, Some((1232, false)));
        let mut v1 = bytes.clone();
        let at = v1.len() - 11 + 6; // the OPT record's version octet
        v1[at] = 1;
        none(&v1, "EDNS version 1");
        bytes[2] |= 0x80;
        none(&bytes, "a response");
        none(&bytes[..20], "cut short");
        none(&[1, 2, 3], "no header");
    }
}
