//! The hickory adapter: request checks as CoreDNS's server and miekg/dns's accept function (one
//! question, class IN, opcode QUERY, EDNS version 0), cluster names answered from the [`Zone`],
//! everything else forwarded through [`Upstreams`] with a [`Cache`]; TCP served by
//! `hickory_server::Server`, UDP by the receive loops of `udp.rs`. Truncation to the client's UDP
//! size (512 without EDNS) is hickory's encoder's.
//!
//! [`Zone`]: crate::zone::Zone

use crate::forward::{Cache, ForwardError, Upstreams};
use crate::prepared::LiveZone;
use crate::udp;
use crate::zone::{self, Lookup, QType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::ProtoError;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UdpSocket};

/// Idle TCP connections are closed after this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Forwarded answers cached at once, and for at most this long.
const CACHE_ENTRIES: usize = 4096;
const CACHE_MAX_TTL: Duration = Duration::from_secs(30);
/// The UDP size asked of upstreams (the DNS flag day 2020 value).
const UPSTREAM_UDP_SIZE: u16 = 1232;

/// Answers DNS questions: the cluster zone, else the upstreams.
pub struct Handler {
    pub(crate) zone: Arc<LiveZone>,
    upstreams: Upstreams,
    cache: Cache<(String, u16, bool), Reply>,
}

/// A forwarded answer, kept for the cache.
#[derive(Debug, Clone)]
struct Reply {
    rcode: ResponseCode,
    authoritative: bool,
    recursion_available: bool,
    truncated: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

/// What to send back.
pub(crate) struct Response {
    metadata: Metadata,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

/// What the zone alone makes of a request.
pub(crate) enum Local {
    Done(Response),
    /// Not a cluster name: the upstreams answer.
    Forward {
        metadata: Metadata,
        query: Query,
    },
    /// An ExternalName outside the zone: its target's addresses come from upstream, after these.
    Chase {
        response: Response,
        query: Query,
    },
}

impl Handler {
    pub fn new(zone: Arc<LiveZone>, upstreams: Upstreams) -> Self {
        Handler { zone, upstreams, cache: Cache::new(CACHE_ENTRIES, CACHE_MAX_TTL) }
    }

    /// The response to a request hickory has decoded (responses are already dropped by hickory).
    async fn respond(&self, request: &Request) -> Response {
        let local = self.local(request);
        self.finish(request, local).await
    }

    /// Everything but the upstreams' part: checks, and the zone's answer.
    pub(crate) fn local(&self, request: &Request) -> Local {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        if request.metadata.op_code != OpCode::Query {
            return Local::Done(error(metadata, ResponseCode::NotImp));
        }
        // miekg/dns `defaultMsgAcceptFunc`: exactly one question, no stray records.
        let extra =
            request.additionals.len() + usize::from(request.edns.is_some()) + usize::from(request.signature.is_some());
        let queries = request.queries.queries();
        if queries.len() != 1 || request.answers.len() > 1 || !request.authorities.is_empty() || extra > 2 {
            return Local::Done(error(metadata, ResponseCode::FormErr));
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Local::Done(error(metadata, ResponseCode::BADVERS));
        }
        let query = queries[0].original();
        if query.query_class() != DNSClass::IN {
            return Local::Done(error(metadata, ResponseCode::Refused));
        }
        let qname = query.name().to_ascii();
        let served = self.zone.read();
        let zone = &served.zone;
        let answer = match zone.lookup(&qname, qtype(query.query_type())) {
            Lookup::Answer(answer) => answer,
            Lookup::NotOurs => return Local::Forward { metadata, query: query.clone() },
        };
        metadata.authoritative = answer.rcode != zone::Rcode::Refused;
        metadata.response_code = match answer.rcode {
            zone::Rcode::NoError => ResponseCode::NoError,
            zone::Rcode::NxDomain => ResponseCode::NXDomain,
            zone::Rcode::ServFail => ResponseCode::ServFail,
            zone::Rcode::Refused => ResponseCode::Refused,
        };
        let convert = |records: &[zone::Record]| records.iter().map(record).collect::<Result<Vec<_>, _>>();
        let (Ok(answers), Ok(authorities), Ok(additionals)) =
            (convert(&answer.answers), convert(&answer.authority), convert(&answer.additionals))
        else {
            return Local::Done(error(metadata, ResponseCode::ServFail));
        };
        let response = Response { metadata, answers, authorities, additionals };
        // An ExternalName outside the zone: its target's addresses come from upstream.
        if let Some(target) = &answer.chase
            && let Ok(name) = Name::from_ascii(target)
            && !zone.contains(target)
        {
            return Local::Chase { response, query: Query::query(name, query.query_type()) };
        }
        Local::Done(response)
    }

    /// Complete `local` with the upstreams' part, if it has one.
    pub(crate) async fn finish(&self, request: &Request, local: Local) -> Response {
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let tcp = request.protocol() == Protocol::Tcp;
        let rd = request.metadata.recursion_desired;
        match local {
            Local::Done(response) => response,
            Local::Chase { mut response, query } => {
                if let Ok(reply) = self.forward(&query, rd, dnssec_ok, tcp).await {
                    response.answers.extend(reply.answers);
                }
                response
            }
            Local::Forward { mut metadata, query } => match self.forward(&query, rd, dnssec_ok, tcp).await {
                Ok(reply) => {
                    metadata.response_code = reply.rcode;
                    metadata.authoritative = reply.authoritative;
                    metadata.recursion_available = reply.recursion_available;
                    metadata.truncation = reply.truncated;
                    Response {
                        metadata,
                        answers: reply.answers,
                        authorities: reply.authorities,
                        additionals: reply.additionals,
                    }
                }
                Err(ForwardError::Overloaded) => error(metadata, ResponseCode::Refused),
                Err(e) => {
                    tracing::debug!(name = %query.name(), error = %e, "dns: forwarding failed");
                    error(metadata, ResponseCode::ServFail)
                }
            },
        }
    }

    /// Ask the upstreams (or the cache) about `query`.
    async fn forward(&self, query: &Query, rd: bool, dnssec_ok: bool, tcp: bool) -> Result<Reply, ForwardError> {
        let key = (query.name().to_lowercase().to_ascii(), u16::from(query.query_type()), dnssec_ok);
        let now = Instant::now();
        if let Some((mut reply, age)) = self.cache.get(&key, now) {
            let age = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
            for r in reply.answers.iter_mut().chain(&mut reply.authorities).chain(&mut reply.additionals) {
                r.ttl = r.ttl.saturating_sub(age);
            }
            return Ok(reply);
        }
        let _permit = self.upstreams.permit()?;
        let mut message = Message::query();
        message.metadata.id = rand::random();
        message.metadata.recursion_desired = rd;
        message.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(UPSTREAM_UDP_SIZE);
        edns.set_dnssec_ok(dnssec_ok);
        message.set_edns(edns);
        let bytes = message.to_vec().map_err(|e| ForwardError::Failed(e.to_string()))?;
        let raw = self.upstreams.exchange(&bytes, tcp).await?;
        let reply = Message::from_vec(&raw).map_err(|e| ForwardError::Failed(format!("bad reply: {e}")))?;
        // hickory compares names case-insensitively.
        let same_question = matches!(reply.queries.as_slice(), [q] if q.name() == query.name()
            && q.query_type() == query.query_type()
            && q.query_class() == query.query_class());
        if !same_question {
            return Err(ForwardError::Failed("reply is for another question".into()));
        }
        let out = Reply {
            rcode: reply.metadata.response_code,
            authoritative: reply.metadata.authoritative,
            recursion_available: reply.metadata.recursion_available,
            truncated: reply.metadata.truncation,
            answers: reply.answers,
            authorities: reply.authorities,
            additionals: reply.additionals,
        };
        if !out.truncated && matches!(out.rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
            self.cache.insert(key, out.clone(), cache_ttl(&out), now);
        }
        Ok(out)
    }
}

/// How long a forwarded answer may be kept: its smallest TTL; a negative answer, its SOA's.
fn cache_ttl(reply: &Reply) -> Duration {
    let records = reply.answers.iter().chain(&reply.authorities);
    let ttl = if reply.answers.is_empty() {
        reply.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
    } else {
        records.map(|r| r.ttl).min()
    };
    Duration::from_secs(u64::from(ttl.unwrap_or(0)))
}

fn error(mut metadata: Metadata, rcode: ResponseCode) -> Response {
    metadata.response_code = rcode;
    Response { metadata, answers: Vec::new(), authorities: Vec::new(), additionals: Vec::new() }
}

fn qtype(t: RecordType) -> QType {
    match t {
        RecordType::A => QType::A,
        RecordType::AAAA => QType::Aaaa,
        RecordType::CNAME => QType::Cname,
        RecordType::NS => QType::Ns,
        RecordType::SOA => QType::Soa,
        RecordType::PTR => QType::Ptr,
        RecordType::MX => QType::Mx,
        RecordType::TXT => QType::Txt,
        RecordType::SRV => QType::Srv,
        RecordType::AXFR => QType::Axfr,
        RecordType::IXFR => QType::Ixfr,
        other => QType::Other(u16::from(other)),
    }
}

/// A zone record as a hickory record.
pub(crate) fn record(r: &zone::Record) -> Result<Record, ProtoError> {
    let name = |s: &str| Name::from_ascii(s);
    let data = match &r.data {
        zone::RData::A(ip) => RData::A(A(*ip)),
        zone::RData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        zone::RData::Cname(t) => RData::CNAME(CNAME(name(t)?)),
        zone::RData::Ptr(t) => RData::PTR(PTR(name(t)?)),
        zone::RData::Ns(t) => RData::NS(NS(name(t)?)),
        zone::RData::Srv { priority, weight, port, target } => {
            RData::SRV(SRV::new(*priority, *weight, *port, name(target)?))
        }
        zone::RData::Txt(t) => RData::TXT(TXT::new(vec![t.clone()])),
        zone::RData::Soa { mname, rname, serial, refresh, retry, expire, minimum } => {
            RData::SOA(SOA::new(name(mname)?, name(rname)?, *serial, *refresh, *retry, *expire, *minimum))
        }
    };
    Ok(Record::from_rdata(name(&r.name)?, r.ttl, data))
}

/// EDNS in, EDNS out: the client's UDP size (at least 512) bounds the reply (RFC 6891).
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().max(512));
        e.set_dnssec_ok(req.flags().dnssec_ok);
        e
    })
}

/// `response` encoded for UDP as hickory-server does: within the client's size, truncated (TC)
/// when it does not fit; SERVFAIL if it cannot be encoded.
pub(crate) fn encode_udp(request: &Request, response: &Response) -> Vec<u8> {
    let edns = response_edns(request);
    let message = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
        response.metadata,
        response.answers.iter(),
        response.authorities.iter(),
        std::iter::empty(),
        response.additionals.iter(),
    );
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(edns.as_ref().map_or(512, Edns::max_payload));
    if message.destructive_emit(&mut encoder).is_ok() {
        return bytes;
    }
    let mut failed = Metadata::response_from_request(&request.metadata);
    failed.response_code = ResponseCode::ServFail;
    header_only(failed)
}

/// A message of just a header (errors for requests that could not be decoded).
pub(crate) fn header_only(metadata: Metadata) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(12);
    let header = Header { metadata, counts: HeaderCounts::default() };
    // A header always encodes.
    let _ = header.emit(&mut BinEncoder::new(&mut bytes));
    bytes
}

/// The handler as hickory-server's TCP side holds it.
struct Tcp(Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for Tcp {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut handle: R) -> ResponseInfo {
        let response = self.0.respond(request).await;
        let edns = response_edns(request);
        let metadata = response.metadata;
        let message = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            response.answers.iter(),
            response.authorities.iter(),
            std::iter::empty(),
            response.additionals.iter(),
        );
        match handle.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "dns: could not send a response");
                let mut failed = Metadata::new(metadata.id, MessageType::Response, metadata.op_code);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata: failed, counts: HeaderCounts::default() })
            }
        }
    }
}

/// Sockets bound and being served: TCP by hickory-server, UDP by [`udp::Workers`].
pub struct Listening {
    server: Server<Tcp>,
    udp: udp::Workers,
}

impl Listening {
    /// A UDP socket and a TCP listener on `listen` (port 0: one free port for both), and their address.
    pub async fn bind_sockets(listen: SocketAddr) -> std::io::Result<((UdpSocket, TcpListener), SocketAddr)> {
        let (udp, tcp) = bind_pair(listen).await?;
        let local_addr = udp.local_addr()?;
        Ok(((udp, tcp), local_addr))
    }

    /// Serve the sockets with `handler`.
    pub fn serve((udp, tcp): (UdpSocket, TcpListener), handler: Handler) -> std::io::Result<Self> {
        let handler = Arc::new(handler);
        let udp = udp::Workers::start(udp, handler.clone())?;
        let mut server = Server::new(Tcp(handler));
        server.register_listener(tcp, TCP_TIMEOUT, 64);
        Ok(Listening { server, udp })
    }

    /// Stop accepting and wait for the listeners to end.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "dns: shutdown");
        }
        self.udp.stop().await;
    }
}

/// A UDP socket and a TCP listener on the same address; with port 0, retried until one free port
/// serves both.
pub(crate) async fn bind_pair(listen: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(listen).await?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port for both UDP and TCP")))
}
