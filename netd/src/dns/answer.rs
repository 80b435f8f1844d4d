//! One DNS query in, what to do with it out: an answer from netd's names,
//! a DNS error, or "forward it". Pure: the server does the sockets.

use std::net::Ipv4Addr;

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{rdata::A, DNSClass, RData, Record, RecordType},
};
use rand::seq::SliceRandom;

use super::names::Names;

/// Seconds a resolver may keep an answer: a changed backend set is seen
/// within this.
pub const TTL: u32 = 5;
/// What a UDP answer may take without EDNS (RFC 1035), and at most with it.
const UDP_PLAIN: usize = 512;
const UDP_MOST: u16 = 4096;

#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Not one of netd's names: ask the upstream resolvers.
    Forward,
    /// Not a query (a response, or too short to carry an id): ignore it.
    Ignore,
}

/// How the query came: UDP answers are kept to the size the asker can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The reply to `query`, asked by `source` through the gateway of
/// `network`.
pub fn answer(
    names: &Names,
    network: &str,
    source: Ipv4Addr,
    query: &[u8],
    transport: Transport,
) -> Reply {
    let Some(id) = query.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return Reply::Ignore;
    };
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) if query.len() >= 12 => return error(id, ResponseCode::FormErr, None),
        Err(_) => return Reply::Ignore,
    };
    if request.message_type() != MessageType::Query {
        return Reply::Ignore;
    }
    if request.op_code() != OpCode::Query {
        return error(id, ResponseCode::NotImp, Some(&request));
    }
    let [question] = request.queries() else {
        return error(id, ResponseCode::FormErr, Some(&request));
    };
    if question.query_class() != DNSClass::IN {
        return Reply::Forward;
    }
    let scope = names.scope(network, source);
    let Some(mut addresses) = names.lookup(&scope, &question.name().to_ascii()) else {
        return Reply::Forward;
    };
    let mut response = response_to(&request, ResponseCode::NoError);
    response.set_authoritative(true);
    if matches!(question.query_type(), RecordType::A | RecordType::ANY) {
        addresses.shuffle(&mut rand::rng());
        for ip in addresses {
            let record = Record::from_rdata(question.name().clone(), TTL, RData::A(A(ip)));
            response.add_answer(record);
        }
    }
    // Any other type of a name netd has: no data, not "no such name".
    encode(response, &request, transport)
}

/// A response carrying `request`'s id, flags and question.
fn response_to(request: &Message, code: ResponseCode) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    response.add_queries(request.queries().iter().cloned());
    if request.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_MOST);
        response.set_edns(edns);
    }
    response
}

/// A DNS error for a query that could not be answered as asked.
fn error(id: u16, code: ResponseCode, request: Option<&Message>) -> Reply {
    let response = match request {
        Some(request) => response_to(request, code),
        None => {
            let mut response = Message::new();
            response
                .set_id(id)
                .set_message_type(MessageType::Response)
                .set_response_code(code);
            response
        }
    };
    match response.to_vec() {
        Ok(bytes) => Reply::Answer(bytes),
        Err(_) => Reply::Ignore,
    }
}

/// The response's bytes; over UDP, one that does not fit what the asker
/// takes is sent truncated (no answers, TC set) so that it asks over TCP.
fn encode(mut response: Message, request: &Message, transport: Transport) -> Reply {
    let Ok(bytes) = response.to_vec() else {
        return error(request.id(), ResponseCode::ServFail, Some(request));
    };
    let limit = match (transport, request.extensions()) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(edns)) => usize::from(edns.max_payload().clamp(512, UDP_MOST)),
        (Transport::Udp, None) => UDP_PLAIN,
    };
    if bytes.len() <= limit {
        return Reply::Answer(bytes);
    }
    response.take_answers();
    response.set_truncated(true);
    match response.to_vec() {
        Ok(bytes) => Reply::Answer(bytes),
        Err(_) => Reply::Ignore,
    }
}

/// A SERVFAIL for `query` (no upstream answered), if it is a query.
pub fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    match error(request.id(), ResponseCode::ServFail, Some(&request)) {
        Reply::Answer(bytes) => Some(bytes),
        _ => None,
    }
}

/// A query for `name` and `kind`, as a resolver sends it (for tests).
pub fn query_for(name: &str, kind: RecordType, id: u16) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    if let Ok(name) = hickory_proto::rr::Name::from_ascii(name) {
        message.add_query(Query::query(name, kind));
    }
    message.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{testing, Endpoint, Service, ServiceSpec};

    const ASKER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

    /// n1 with endpoints app0..app(n-1) behind service `web`.
    fn world(backends: usize) -> (Names, String, Ipv4Addr) {
        let n1 = testing::network("n1", "10.1.0.0/16", &[]);
        let networks = std::slice::from_ref(&n1);
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for i in 0..=backends {
            let labels: &[(&str, &str)] = if i == 0 { &[] } else { &[("app", "web")] };
            let e = testing::endpoint(&format!("app{i}"), "n1", labels, None, networks, &endpoints);
            endpoints.push(e);
        }
        assert_eq!(endpoints[0].ipv4, ASKER);
        let spec = ServiceSpec {
            name: "web".into(),
            network: "n1".into(),
            selector: Some("app=web".into()),
            ports: vec!["80:8080/tcp".into()],
            ..Default::default()
        };
        let web = Service::from_spec(
            &spec,
            std::slice::from_ref(&n1),
            &[],
            &endpoints,
            &Default::default(),
            1,
        )
        .expect("service");
        let vip = web.vip.expect("vip");
        let names = Names::build(std::slice::from_ref(&n1), &endpoints, &[web], |_| true);
        (names, n1.id, vip)
    }

    fn ask(names: &Names, network: &str, query: &[u8], transport: Transport) -> Message {
        match answer(names, network, ASKER, query, transport) {
            Reply::Answer(bytes) => Message::from_vec(&bytes).expect("a DNS message"),
            other => panic!("no answer: {other:?}"),
        }
    }

    fn addresses(m: &Message) -> Vec<Ipv4Addr> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_service_is_its_vip_and_tasks_its_backends_in_shuffled_order() {
        let (names, n1, vip) = world(3);
        let m = ask(
            &names,
            &n1,
            &query_for("web.", RecordType::A, 7),
            Transport::Udp,
        );
        assert_eq!((m.id(), m.response_code()), (7, ResponseCode::NoError));
        assert!(m.authoritative());
        assert_eq!(addresses(&m), vec![vip]);
        assert!(m.answers().iter().all(|r| r.ttl() == TTL));
        let mut orders = std::collections::BTreeSet::new();
        for id in 0..40 {
            let m = ask(
                &names,
                &n1,
                &query_for("tasks.web.", RecordType::A, id),
                Transport::Udp,
            );
            let got = addresses(&m);
            let mut sorted = got.clone();
            sorted.sort();
            let want: Vec<Ipv4Addr> = vec![
                [10, 1, 0, 3].into(),
                [10, 1, 0, 4].into(),
                [10, 1, 0, 5].into(),
            ];
            assert_eq!(sorted, want);
            orders.insert(got);
        }
        assert!(orders.len() > 1, "always the same order: {orders:?}");
        // A name netd has, of another type: no data, not NXDOMAIN.
        let m = ask(
            &names,
            &n1,
            &query_for("web.", RecordType::AAAA, 8),
            Transport::Udp,
        );
        assert_eq!(
            (m.response_code(), m.answers().len()),
            (ResponseCode::NoError, 0)
        );
        // Endpoint names, and everything else goes upstream.
        let m = ask(
            &names,
            &n1,
            &query_for("App2.", RecordType::A, 9),
            Transport::Udp,
        );
        assert_eq!(addresses(&m), vec![Ipv4Addr::new(10, 1, 0, 4)]);
        let outside = query_for("example.org.", RecordType::A, 10);
        assert_eq!(
            answer(&names, &n1, ASKER, &outside, Transport::Udp),
            Reply::Forward
        );
    }

    #[test]
    fn bad_queries_get_dns_errors_and_responses_are_ignored() {
        let (names, n1, _) = world(1);
        let mut garbage = vec![0x12, 0x34];
        garbage.extend([0xff; 20]);
        let m = ask(&names, &n1, &garbage, Transport::Udp);
        assert_eq!((m.id(), m.response_code()), (0x1234, ResponseCode::FormErr));
        assert_eq!(
            answer(&names, &n1, ASKER, &[1], Transport::Udp),
            Reply::Ignore
        );

        let mut two = Message::from_vec(&query_for("web.", RecordType::A, 3)).expect("q");
        two.add_query(Query::query(
            hickory_proto::rr::Name::from_ascii("app1.").expect("name"),
            RecordType::A,
        ));
        let m = ask(&names, &n1, &two.to_vec().expect("bytes"), Transport::Udp);
        assert_eq!(m.response_code(), ResponseCode::FormErr);

        let mut update = Message::from_vec(&query_for("web.", RecordType::A, 4)).expect("q");
        update.set_op_code(OpCode::Update);
        let m = ask(
            &names,
            &n1,
            &update.to_vec().expect("bytes"),
            Transport::Udp,
        );
        assert_eq!(m.response_code(), ResponseCode::NotImp);

        let mut response = Message::from_vec(&query_for("web.", RecordType::A, 5)).expect("q");
        response.set_message_type(MessageType::Response);
        let bytes = response.to_vec().expect("bytes");
        assert_eq!(
            answer(&names, &n1, ASKER, &bytes, Transport::Udp),
            Reply::Ignore
        );
    }

    #[test]
    fn an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp() {
        let (names, n1, _) = world(60);
        let query = query_for("tasks.web.", RecordType::A, 11);
        let m = ask(&names, &n1, &query, Transport::Udp);
        assert!(
            m.truncated() && m.answers().is_empty(),
            "60 A records in 512 bytes"
        );
        let m = ask(&names, &n1, &query, Transport::Tcp);
        assert!(!m.truncated());
        assert_eq!(addresses(&m).len(), 60);
        // With EDNS the asker takes more over UDP.
        let mut big = Message::from_vec(&query).expect("q");
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        big.set_edns(edns);
        let m = ask(&names, &n1, &big.to_vec().expect("bytes"), Transport::Udp);
        assert_eq!((m.truncated(), addresses(&m).len()), (false, 60));
    }
}
