//! An authoritative DNS server for the simulator's zones, on UDP and TCP (hickory-server).
//!
//! It answers SOA, NS, TXT, CNAME (and A for its own nameserver name). Records come from
//! provisioning, from the management API and from RFC 2136 dynamic UPDATE, so an nsupdate-based
//! hook works against it. Updates are accepted unsigned; a TSIG-signed update is refused with
//! NOTAUTH, since the simulator holds no keys.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::ServerFuture;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use serde::Serialize;

/// One record as the management API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RecordView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    pub ttl: u32,
    /// False while a propagation delay still hides it.
    pub visible: bool,
}

#[derive(Clone, Debug)]
struct Entry {
    name: LowerName,
    record: Record,
    visible_at: Instant,
}

/// The zones and their records, shared by the server, the API and the management routes.
#[derive(Debug)]
pub struct ZoneStore {
    zones: Vec<LowerName>,
    entries: Mutex<Vec<Entry>>,
}

/// A record value the store understands.
#[derive(Clone, Debug)]
pub enum Value {
    Txt(String),
    Cname(String),
    /// A name's address, where a FILE validation's HTTP GET goes.
    A(std::net::Ipv4Addr),
}

impl ZoneStore {
    pub fn new(zones: &[String]) -> Result<Self, String> {
        let zones = zones
            .iter()
            .map(|z| {
                Name::from_str(z)
                    .map(|n| LowerName::new(&n.to_lowercase().append_domain(&Name::root()).unwrap_or(n)))
                    .map_err(|e| format!("zone '{z}': {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            zones,
            entries: Mutex::new(Vec::new()),
        })
    }

    /// The zone that holds `name`, the most specific one if zones nest.
    pub fn zone_of(&self, name: &LowerName) -> Option<LowerName> {
        self.zones
            .iter()
            .filter(|z| z.zone_of(name))
            .max_by_key(|z| z.num_labels())
            .cloned()
    }

    /// Whether `name` lies in one of the zones (so that AutoDNS could publish a record there).
    pub fn hosts(&self, name: &str) -> bool {
        fqdn(name).is_ok_and(|n| self.zone_of(&LowerName::new(&n)).is_some())
    }

    /// Adds a record, visible after `delay`. An identical record is not added twice.
    pub fn add(&self, name: &str, value: Value, ttl: u32, delay: Duration) -> Result<(), String> {
        let name = fqdn(name)?;
        let lname = LowerName::new(&name);
        if self.zone_of(&lname).is_none() {
            return Err(format!("{name} is in none of the simulator's zones"));
        }
        let rdata = match value {
            Value::Txt(v) => RData::TXT(TXT::new(vec![v])),
            Value::Cname(t) => RData::CNAME(CNAME(fqdn(&t)?)),
            Value::A(ip) => RData::A(A(ip)),
        };
        let record = Record::from_rdata(name, ttl, rdata);
        self.insert(lname, record, Instant::now() + delay);
        Ok(())
    }

    fn insert(&self, name: LowerName, record: Record, visible_at: Instant) {
        let mut entries = lock(&self.entries);
        let same = |e: &Entry| e.name == name && e.record.data() == record.data();
        if !entries.iter().any(same) {
            entries.push(Entry {
                name,
                record,
                visible_at,
            });
        }
    }

    /// Removes records at `name`: of one type, or of every type with `None`.
    pub fn clear(&self, name: &str, kind: Option<RecordType>) -> Result<usize, String> {
        let name = LowerName::new(&fqdn(name)?);
        let mut entries = lock(&self.entries);
        let before = entries.len();
        entries.retain(|e| !(e.name == name && kind.is_none_or(|k| e.record.record_type() == k)));
        Ok(before - entries.len())
    }

    /// Removes one record whose value matches exactly.
    pub fn remove(&self, name: &str, value: &Value) -> Result<usize, String> {
        let name = LowerName::new(&fqdn(name)?);
        let mut entries = lock(&self.entries);
        let before = entries.len();
        entries.retain(|e| !(e.name == name && value_matches(e.record.data(), value)));
        Ok(before - entries.len())
    }

    /// Removes every record.
    pub fn reset(&self) {
        lock(&self.entries).clear();
    }

    /// Every record, for the management API.
    pub fn list(&self) -> Vec<RecordView> {
        let now = Instant::now();
        lock(&self.entries)
            .iter()
            .map(|e| {
                let (kind, value) = describe(e.record.data());
                RecordView {
                    name: e.record.name().to_string(),
                    kind,
                    value,
                    ttl: e.record.ttl(),
                    visible: e.visible_at <= now,
                }
            })
            .collect()
    }

    fn visible(&self, name: &LowerName, kind: Option<RecordType>) -> Vec<Record> {
        let now = Instant::now();
        lock(&self.entries)
            .iter()
            .filter(|e| e.visible_at <= now && &e.name == name)
            .filter(|e| kind.is_none_or(|k| e.record.record_type() == k))
            .map(|e| e.record.clone())
            .collect()
    }
}

fn value_matches(data: &RData, value: &Value) -> bool {
    match (data, value) {
        (RData::TXT(t), Value::Txt(v)) => txt_string(t) == *v,
        (RData::CNAME(c), Value::Cname(v)) => fqdn(v).is_ok_and(|n| n.eq_case(&c.0) || n == c.0),
        (RData::A(a), Value::A(ip)) => a.0 == *ip,
        _ => false,
    }
}

fn txt_string(t: &TXT) -> String {
    t.txt_data().iter().map(|b| String::from_utf8_lossy(b)).collect()
}

fn describe(data: &RData) -> (String, String) {
    match data {
        RData::TXT(t) => ("TXT".into(), txt_string(t)),
        other => (other.record_type().to_string(), other.to_string()),
    }
}

/// Parses a name and makes it fully qualified.
pub fn fqdn(name: &str) -> Result<Name, String> {
    let mut n = Name::from_str(name).map_err(|e| format!("'{name}' is not a DNS name: {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Answers queries and updates from the store.
#[derive(Clone, Debug)]
pub struct Handler {
    store: Arc<ZoneStore>,
}

impl Handler {
    pub fn new(store: Arc<ZoneStore>) -> Self {
        Self { store }
    }

    fn soa(&self, zone: &LowerName) -> Record {
        let origin = Name::from(zone);
        let ns = Name::from_ascii("ns1")
            .and_then(|n| n.append_domain(&origin))
            .unwrap_or_else(|_| origin.clone());
        let mbox = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&origin))
            .unwrap_or_else(|_| origin.clone());
        Record::from_rdata(origin, 300, RData::SOA(SOA::new(ns, mbox, 1, 3600, 600, 86400, 60)))
    }

    fn ns_name(zone: &LowerName) -> Name {
        let origin = Name::from(zone);
        Name::from_ascii("ns1")
            .and_then(|n| n.append_domain(&origin))
            .unwrap_or(origin)
    }

    /// Computes (code, answers, authority) for one question.
    fn answer(&self, qname: &LowerName, qtype: RecordType) -> (ResponseCode, Vec<Record>, Vec<Record>) {
        let Some(zone) = self.store.zone_of(qname) else {
            return (ResponseCode::Refused, vec![], vec![]);
        };
        let origin = Name::from(&zone);
        let ns_name = Self::ns_name(&zone);
        let mut answers = Vec::new();
        let apex = *qname == zone;
        let is_ns_host = LowerName::new(&ns_name) == *qname;
        match qtype {
            RecordType::SOA if apex => answers.push(self.soa(&zone)),
            RecordType::NS if apex => {
                answers.push(Record::from_rdata(origin.clone(), 300, RData::NS(NS(ns_name.clone()))))
            }
            RecordType::A if is_ns_host => {
                answers.push(Record::from_rdata(ns_name.clone(), 300, RData::A(A::new(127, 0, 0, 1))))
            }
            _ => {}
        }
        if answers.is_empty() {
            answers = self.store.visible(qname, Some(qtype));
            if answers.is_empty() && qtype != RecordType::CNAME {
                // Follow a CNAME chain inside our zones, a few links at most.
                let mut name = qname.clone();
                for _ in 0..8 {
                    let cnames = self.store.visible(&name, Some(RecordType::CNAME));
                    let Some(c) = cnames.first() else { break };
                    answers.push(c.clone());
                    let RData::CNAME(target) = c.data() else { break };
                    name = LowerName::new(&target.0);
                    if self.store.zone_of(&name).is_none() {
                        break;
                    }
                    let found = self.store.visible(&name, Some(qtype));
                    if !found.is_empty() {
                        answers.extend(found);
                        break;
                    }
                }
            }
        }
        if !answers.is_empty() {
            return (ResponseCode::NoError, answers, vec![]);
        }
        let exists = apex || is_ns_host || !self.store.visible(qname, None).is_empty();
        let code = if exists {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        (code, vec![], vec![self.soa(&zone)])
    }

    /// Applies an RFC 2136 update section. Prerequisites are not evaluated.
    fn update(&self, request: &Request) -> ResponseCode {
        let Some(zone_q) = request.queries().first() else {
            return ResponseCode::FormErr;
        };
        if request
            .additionals()
            .iter()
            .any(|r| r.record_type() == RecordType::TSIG)
            || !request.sig0().is_empty()
        {
            return ResponseCode::NotAuth;
        }
        let Some(zone) = self.store.zone_of(zone_q.name()) else {
            return ResponseCode::NotAuth;
        };
        if zone != *zone_q.name() {
            return ResponseCode::NotZone;
        }
        for rr in request.name_servers() {
            let name = LowerName::new(rr.name());
            if !zone.zone_of(&name) {
                return ResponseCode::NotZone;
            }
        }
        for rr in request.name_servers() {
            let name = LowerName::new(rr.name());
            let text = rr.name().to_string();
            match rr.dns_class() {
                DNSClass::IN => match rr.data() {
                    RData::TXT(_) | RData::CNAME(_) => {
                        self.store.insert(name, rr.clone(), Instant::now());
                    }
                    _ => return ResponseCode::Refused,
                },
                DNSClass::ANY => {
                    let kind = (rr.record_type() != RecordType::ANY).then_some(rr.record_type());
                    let _ = self.store.clear(&text, kind);
                }
                DNSClass::NONE => {
                    let value = match rr.data() {
                        RData::TXT(t) => Value::Txt(txt_string(t)),
                        RData::CNAME(c) => Value::Cname(c.0.to_string()),
                        _ => continue,
                    };
                    let _ = self.store.remove(&text, &value);
                }
                _ => return ResponseCode::FormErr,
            }
        }
        ResponseCode::NoError
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let mut header = Header::response_from_request(request.header());
        header.set_message_type(MessageType::Response);
        header.set_authoritative(true);
        let builder = MessageResponseBuilder::from_message_request(request);
        let result = match request.op_code() {
            OpCode::Update => {
                header.set_response_code(self.update(request));
                response.send_response(builder.build_no_records(header)).await
            }
            OpCode::Query => {
                let Some(q) = request.queries().first() else {
                    header.set_response_code(ResponseCode::FormErr);
                    return send_or_header(response.send_response(builder.build_no_records(header)).await, header);
                };
                let (code, answers, authority) = self.answer(q.name(), q.query_type());
                header.set_response_code(code);
                header.set_authoritative(code != ResponseCode::Refused);
                response
                    .send_response(builder.build(header, answers.iter(), [], authority.iter(), []))
                    .await
            }
            _ => {
                header.set_response_code(ResponseCode::NotImp);
                response.send_response(builder.build_no_records(header)).await
            }
        };
        send_or_header(result, header)
    }
}

fn send_or_header(result: std::io::Result<ResponseInfo>, header: Header) -> ResponseInfo {
    result.unwrap_or_else(|_| header.into())
}

/// A running DNS server on one address, UDP and TCP.
pub struct DnsServer {
    pub addr: SocketAddr,
    server: ServerFuture<Handler>,
}

impl DnsServer {
    /// Binds UDP and TCP on `listen` (port 0: a free port shared by both) and starts serving.
    pub async fn start(listen: SocketAddr, store: Arc<ZoneStore>) -> std::io::Result<Self> {
        // UDP and TCP must share the port; with port 0, retry until both binds succeed.
        let mut last_err = None;
        for _ in 0..20 {
            let udp = tokio::net::UdpSocket::bind(listen).await?;
            let addr = udp.local_addr()?;
            match tokio::net::TcpListener::bind(addr).await {
                Ok(tcp) => {
                    let mut server = ServerFuture::new(Handler::new(store));
                    server.register_socket(udp);
                    server.register_listener(tcp, Duration::from_secs(10));
                    return Ok(Self { addr, server });
                }
                Err(e) if listen.port() == 0 => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("could not bind DNS sockets")))
    }

    /// Stops serving.
    pub async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}
