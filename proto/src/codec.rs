//! Framing and decoding of control-socket messages.
//!
//! One request per line: `{"id": 7, "op": "add_port", "params": {"name": "veth1"}}`.
//! One response per request, same `id`: `{"id": 7, "result": {...}}` or
//! `{"id": 7, "error": {"code": "not_found", "message": "..."}}`.
//!
//! [`decode_request`] takes untrusted bytes and returns either a typed [`Request`] or
//! an [`ErrorReply`] that can be sent back as is; it never panics.

use crate::{AddPortParams, DelPortParams, Op, StatsParams, SyncDeltaParams, SyncFullParams};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Version of this protocol; `hello` reports it. Bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest accepted request line, newline excluded. Longer lines get `too_large`
/// and the connection is closed (the rest of the line cannot be trusted to resync).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The client's request id, echoed in the response: a JSON number or string, or
/// `null` when the request was too broken to have one.
pub type RequestId = Value;

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    #[serde(flatten)]
    pub op: Op,
}

/// Machine-readable error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not UTF-8.
    ParseError,
    /// JSON, but not a request object (missing/ill-typed `id` or `op`).
    InvalidRequest,
    /// `op` names no operation.
    UnknownOp,
    /// The operation's parameters are missing, ill-typed or out of range.
    InvalidParams,
    /// Line longer than [`MAX_LINE_BYTES`].
    TooLarge,
    /// The named object does not exist.
    NotFound,
    /// The named object exists already.
    Exists,
    /// The request is valid but could not be carried out (e.g. interface missing,
    /// XDP refused); the message says why.
    Failed,
    /// The peer is not allowed to use the socket.
    PermissionDenied,
    /// A bug; the daemon keeps serving.
    Internal,
    /// `sync_delta` was computed against another generation than the daemon's:
    /// the client should send a `sync_full`.
    GenerationMismatch,
}

/// The `error` member of a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = serde_json::to_value(self.code).ok();
        let code = code.as_ref().and_then(Value::as_str).unwrap_or("error");
        write!(f, "{}: {}", code, self.message)
    }
}

impl std::error::Error for ErrorReply {}

/// A response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: RequestId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
}

impl Response {
    pub fn ok(id: RequestId, result: Value) -> Self {
        Response {
            id,
            result: Some(result),
            error: None,
        }
    }
    pub fn err(id: RequestId, error: ErrorReply) -> Self {
        Response {
            id,
            result: None,
            error: Some(error),
        }
    }
    /// The result, or the error as a Rust error.
    pub fn into_result(self) -> Result<Value, ErrorReply> {
        match (self.error, self.result) {
            (Some(e), _) => Err(e),
            (None, Some(v)) => Ok(v),
            (None, None) => Ok(Value::Null),
        }
    }
}

/// Serialises a response as one line, newline included.
pub fn encode_response(resp: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(resp).unwrap_or_else(|e| {
        // Only non-string map keys can make this fail; none of our types have them.
        format!(r#"{{"id":null,"error":{{"code":"internal","message":"encode: {e}"}}}}"#)
            .into_bytes()
    });
    out.push(b'\n');
    out
}

/// Decodes one request line (without its newline). On error, returns the id (if one
/// could be read) together with the reply to send.
pub fn decode_request(line: &[u8]) -> Result<Request, (RequestId, ErrorReply)> {
    let null = Value::Null;
    if line.len() > MAX_LINE_BYTES {
        return Err((
            null,
            ErrorReply::new(
                ErrorCode::TooLarge,
                format!(
                    "request of {} bytes exceeds the limit of {MAX_LINE_BYTES}",
                    line.len()
                ),
            ),
        ));
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        (
            Value::Null,
            ErrorReply::new(ErrorCode::ParseError, e.to_string()),
        )
    })?;
    let Value::Object(mut obj) = value else {
        return Err((
            null,
            ErrorReply::new(ErrorCode::InvalidRequest, "request must be a JSON object"),
        ));
    };
    let id = match obj.remove("id") {
        Some(id @ (Value::Number(_) | Value::String(_))) => id,
        Some(_) => {
            return Err((
                Value::Null,
                ErrorReply::new(
                    ErrorCode::InvalidRequest,
                    "'id' must be a number or a string",
                ),
            ));
        }
        None => {
            return Err((
                Value::Null,
                ErrorReply::new(ErrorCode::InvalidRequest, "missing 'id'"),
            ));
        }
    };
    let op = match obj.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => {
            return Err((
                id,
                ErrorReply::new(ErrorCode::InvalidRequest, "'op' must be a string"),
            ));
        }
        None => {
            return Err((
                id,
                ErrorReply::new(ErrorCode::InvalidRequest, "missing 'op'"),
            ));
        }
    };
    let params = obj.remove("params").unwrap_or(Value::Null);
    match decode_op(&op, params) {
        Ok(op) => Ok(Request { id, op }),
        Err(e) => Err((id, e)),
    }
}

fn decode_op(op: &str, params: Value) -> Result<Op, ErrorReply> {
    match op {
        "hello" => no_params(op, params).map(|()| Op::Hello),
        "list_ports" => no_params(op, params).map(|()| Op::ListPorts),
        "add_port" => typed::<AddPortParams>(op, params).map(Op::AddPort),
        "del_port" => typed::<DelPortParams>(op, params).map(Op::DelPort),
        "sync_full" => typed::<SyncFullParams>(op, params).map(Op::SyncFull),
        "sync_delta" => typed::<SyncDeltaParams>(op, params).map(Op::SyncDelta),
        "sync_status" => no_params(op, params).map(|()| Op::SyncStatus),
        "flow_mods" => typed::<crate::FlowModsParams>(op, params).map(Op::FlowMods),
        "dump_flows" => typed::<crate::DumpFlowsParams>(op, or_empty(params)).map(Op::DumpFlows),
        "dump_groups" => no_params(op, params).map(|()| Op::DumpGroups),
        "trace" => typed::<crate::TraceParams>(op, params).map(Op::Trace),
        "conntrack" => typed::<crate::ConntrackParams>(op, or_empty(params)).map(Op::Conntrack),
        "services" => no_params(op, params).map(|()| Op::Services),
        "policies" => typed::<crate::PoliciesParams>(op, or_empty(params)).map(Op::Policies),
        "capture_start" => typed::<crate::CaptureStartParams>(op, params).map(Op::CaptureStart),
        "capture_read" => typed::<crate::CaptureIdParams>(op, params).map(Op::CaptureRead),
        "capture_stop" => typed::<crate::CaptureIdParams>(op, params).map(Op::CaptureStop),
        "stats" => {
            let params = if params.is_null() {
                Value::Object(Default::default())
            } else {
                params
            };
            typed::<StatsParams>(op, params).map(Op::Stats)
        }
        other => Err(ErrorReply::new(
            ErrorCode::UnknownOp,
            format!("unknown op '{}'", truncate(other)),
        )),
    }
}

/// Missing params mean an empty object for ops whose params are all optional.
fn or_empty(params: Value) -> Value {
    if params.is_null() {
        Value::Object(Default::default())
    } else {
        params
    }
}

fn no_params(op: &str, params: Value) -> Result<(), ErrorReply> {
    match params {
        Value::Null => Ok(()),
        Value::Object(m) if m.is_empty() => Ok(()),
        _ => Err(ErrorReply::new(
            ErrorCode::InvalidParams,
            format!("'{op}' takes no params"),
        )),
    }
}

fn typed<T: serde::de::DeserializeOwned>(op: &str, params: Value) -> Result<T, ErrorReply> {
    if params.is_null() {
        return Err(ErrorReply::new(
            ErrorCode::InvalidParams,
            format!("'{op}' needs params"),
        ));
    }
    serde_json::from_value(params)
        .map_err(|e| ErrorReply::new(ErrorCode::InvalidParams, format!("{op}: {e}")))
}

/// Keeps echoed client strings short in error messages.
fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortKind, PortMode};

    fn err_code(line: &str) -> ErrorCode {
        match decode_request(line.as_bytes()) {
            Err((_, e)) => e.code,
            Ok(r) => panic!("decoded {r:?}"),
        }
    }

    #[test]
    fn decodes_every_op() {
        let r = decode_request(br#"{"id":1,"op":"hello"}"#).expect("hello");
        assert_eq!(r.op, Op::Hello);
        let r = decode_request(br#"{"id":"a","op":"add_port","params":{"name":"v0","kind":"uplink","mode":"xdp-skb"}}"#)
            .expect("add_port");
        assert_eq!(r.id, Value::String("a".into()));
        assert_eq!(
            r.op,
            Op::AddPort(AddPortParams {
                name: "v0".into(),
                kind: PortKind::Uplink,
                mode: PortMode::XdpSkb,
                pod: None,
            })
        );
        let r = decode_request(br#"{"id":2,"op":"add_port","params":{"name":"v0"}}"#)
            .expect("defaults");
        assert_eq!(
            r.op,
            Op::AddPort(AddPortParams {
                name: "v0".into(),
                kind: PortKind::Pod,
                mode: PortMode::Auto,
                pod: None,
            })
        );
        assert_eq!(
            decode_request(br#"{"id":3,"op":"stats"}"#)
                .expect("stats")
                .op,
            Op::Stats(StatsParams::default())
        );
        assert_eq!(
            decode_request(br#"{"id":3,"op":"list_ports","params":{}}"#)
                .expect("lp")
                .op,
            Op::ListPorts
        );
        let r = decode_request(br#"{"id":4,"op":"del_port","params":{"name":"v0"}}"#).expect("del");
        assert_eq!(r.op, Op::DelPort(DelPortParams { name: "v0".into() }));
    }

    #[test]
    fn flow_ops_decode_and_round_trip() {
        let line = br#"{"id":1,"op":"flow_mods","params":{"mods":[{"op":"add","spec":"actions=drop"},{"op":"delete_strict","spec":"priority=5"}]}}"#;
        let r = decode_request(line).expect("flow_mods");
        let Op::FlowMods(p) = &r.op else {
            panic!("{:?}", r.op)
        };
        assert_eq!(p.mods.len(), 2);
        assert_eq!(p.mods[1].op, crate::FlowModOp::DeleteStrict);
        let again = decode_request(&serde_json::to_vec(&r).expect("enc")).expect("dec");
        assert_eq!(again, r);
        let r = decode_request(br#"{"id":2,"op":"dump_flows"}"#).expect("dump");
        assert_eq!(r.op, Op::DumpFlows(crate::DumpFlowsParams::default()));
        assert!(decode_request(br#"{"id":3,"op":"dump_groups","params":{"x":1}}"#).is_err());
        let e = decode_request(br#"{"id":4,"op":"trace","params":{}}"#).expect_err("spec needed");
        assert_eq!(e.1.code, ErrorCode::InvalidParams);
        let e = decode_request(br#"{"id":5,"op":"flow_mods","params":{"mods":[{"op":"nope"}]}}"#)
            .expect_err("bad op");
        assert_eq!(e.1.code, ErrorCode::InvalidParams);
    }

    #[test]
    fn request_round_trips_through_serde() {
        let req = Request {
            id: Value::from(9),
            op: Op::AddPort(AddPortParams {
                name: "x".into(),
                kind: PortKind::Gateway,
                mode: PortMode::Packet,
                pod: None,
            }),
        };
        let line = serde_json::to_vec(&req).expect("encode");
        assert_eq!(decode_request(&line).expect("decode"), req);
        let req = Request {
            id: Value::from(10),
            op: Op::ListPorts,
        };
        let line = serde_json::to_vec(&req).expect("encode");
        assert_eq!(decode_request(&line).expect("decode"), req);
    }

    #[test]
    fn bad_requests_get_precise_codes() {
        assert_eq!(err_code("not json"), ErrorCode::ParseError);
        assert_eq!(err_code(r#"{"id":1,"op":"hello""#), ErrorCode::ParseError);
        assert_eq!(err_code("[1,2]"), ErrorCode::InvalidRequest);
        assert_eq!(err_code(r#"{"op":"hello"}"#), ErrorCode::InvalidRequest);
        assert_eq!(
            err_code(r#"{"id":{},"op":"hello"}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(err_code(r#"{"id":1,"op":7}"#), ErrorCode::InvalidRequest);
        assert_eq!(
            err_code(r#"{"id":1,"op":"frobnicate"}"#),
            ErrorCode::UnknownOp
        );
        assert_eq!(
            err_code(r#"{"id":1,"op":"add_port"}"#),
            ErrorCode::InvalidParams
        );
        assert_eq!(
            err_code(r#"{"id":1,"op":"add_port","params":{"name":3}}"#),
            ErrorCode::InvalidParams
        );
        assert_eq!(
            err_code(r#"{"id":1,"op":"add_port","params":{"name":"a","mode":"turbo"}}"#),
            ErrorCode::InvalidParams
        );
        assert_eq!(
            err_code(r#"{"id":1,"op":"add_port","params":{"name":"a","bogus":1}}"#),
            ErrorCode::InvalidParams
        );
        assert_eq!(
            err_code(r#"{"id":1,"op":"hello","params":[1]}"#),
            ErrorCode::InvalidParams
        );
        let big = vec![b' '; MAX_LINE_BYTES + 1];
        assert!(matches!(decode_request(&big), Err((_, e)) if e.code == ErrorCode::TooLarge));
        assert!(
            matches!(decode_request(&[0xff, 0xfe]), Err((_, e)) if e.code == ErrorCode::ParseError)
        );
    }

    #[test]
    fn decodes_sync_ops() {
        let r = decode_request(br#"{"id":1,"op":"sync_status"}"#).expect("status");
        assert_eq!(r.op, Op::SyncStatus);
        let r = decode_request(
            br#"{"id":2,"op":"sync_full","params":{"generation":7,"state":{"objects":[{"kind":"Namespace","name":"default"}]}}}"#,
        )
        .expect("full");
        let Op::SyncFull(p) = r.op else {
            panic!("not a full sync: {r:?}")
        };
        assert_eq!((p.generation, p.state.len(), p.more), (7, 1, false));
        let r = decode_request(
            br#"{"id":3,"op":"sync_delta","params":{"base_generation":7,"generation":8,"deletes":["Namespace/default"]}}"#,
        )
        .expect("delta");
        assert!(
            matches!(r.op, Op::SyncDelta(ref d) if d.deletes.len() == 1 && d.upserts.is_empty())
        );
        for bad in [
            r#"{"id":4,"op":"sync_full"}"#,
            r#"{"id":4,"op":"sync_full","params":{"generation":1}}"#,
            r#"{"id":4,"op":"sync_full","params":{"generation":1,"state":{"objects":[{"kind":"Frob"}]}}}"#,
            r#"{"id":4,"op":"sync_delta","params":{"base_generation":1,"generation":2,"deletes":["Pod/x"]}}"#,
            r#"{"id":4,"op":"sync_delta","params":{"base_generation":-1,"generation":2}}"#,
            r#"{"id":4,"op":"sync_status","params":{"x":1}}"#,
        ] {
            assert_eq!(err_code(bad), ErrorCode::InvalidParams, "{bad}");
        }
        assert_eq!(
            serde_json::to_value(ErrorCode::GenerationMismatch).expect("code"),
            "generation_mismatch"
        );
    }

    #[test]
    fn decodes_policies() {
        use crate::PoliciesParams;
        let r = decode_request(br#"{"id":1,"op":"policies"}"#).expect("bare");
        assert_eq!(r.op, Op::Policies(PoliciesParams::default()));
        let r = decode_request(br#"{"id":2,"op":"policies","params":{"namespace":"x"}}"#)
            .expect("namespace");
        assert_eq!(
            r.op,
            Op::Policies(PoliciesParams {
                namespace: Some("x".into())
            })
        );
        for bad in [
            r#"{"id":3,"op":"policies","params":{"namespace":7}}"#,
            r#"{"id":3,"op":"policies","params":{"frob":1}}"#,
            r#"{"id":3,"op":"policies","params":[1]}"#,
        ] {
            assert_eq!(err_code(bad), ErrorCode::InvalidParams, "{bad}");
        }
    }

    #[test]
    fn decodes_conntrack_and_services() {
        use crate::{ConntrackParams, CtProto};
        let r = decode_request(br#"{"id":1,"op":"conntrack"}"#).expect("bare");
        assert_eq!(r.op, Op::Conntrack(ConntrackParams::default()));
        let r = decode_request(
            br#"{"id":2,"op":"conntrack","params":{"flush":true,"zone":1,"src":"10.0.0.1","dst":"fd00::1","proto":"udp","limit":5}}"#,
        )
        .expect("full");
        let Op::Conntrack(p) = r.op else {
            panic!("{r:?}")
        };
        assert!(p.flush);
        assert_eq!(p.zone, Some(1));
        assert_eq!(p.src, "10.0.0.1".parse().ok());
        assert_eq!(p.dst, "fd00::1".parse().ok());
        assert_eq!(p.proto, Some(CtProto::Udp));
        assert_eq!(p.limit, Some(5));
        let r = decode_request(br#"{"id":3,"op":"services"}"#).expect("services");
        assert_eq!(r.op, Op::Services);
        for bad in [
            r#"{"id":4,"op":"conntrack","params":{"src":"10.0.0.300"}}"#,
            r#"{"id":4,"op":"conntrack","params":{"src":7}}"#,
            r#"{"id":4,"op":"conntrack","params":{"zone":70000}}"#,
            r#"{"id":4,"op":"conntrack","params":{"zone":-1}}"#,
            r#"{"id":4,"op":"conntrack","params":{"proto":"gre"}}"#,
            r#"{"id":4,"op":"conntrack","params":{"flush":"yes"}}"#,
            r#"{"id":4,"op":"conntrack","params":{"frob":1}}"#,
            r#"{"id":4,"op":"conntrack","params":[1]}"#,
            r#"{"id":4,"op":"conntrack","params":"x"}"#,
            r#"{"id":4,"op":"services","params":{"x":1}}"#,
            r#"{"id":4,"op":"services","params":7}"#,
        ] {
            assert_eq!(err_code(bad), ErrorCode::InvalidParams, "{bad}");
        }
        // Round trip.
        let req = Request {
            id: Value::from(5),
            op: Op::Conntrack(ConntrackParams {
                flush: true,
                zone: Some(3),
                src: None,
                dst: "10.96.0.10".parse().ok(),
                proto: Some(CtProto::Icmp),
                limit: None,
            }),
        };
        let line = serde_json::to_vec(&req).expect("encode");
        assert_eq!(decode_request(&line).expect("decode"), req);
        assert_eq!("SCTP".parse::<CtProto>(), Ok(CtProto::Sctp));
        assert!("gre".parse::<CtProto>().is_err());
        assert!(CtProto::Icmp.matches(58) && !CtProto::Tcp.matches(17));
    }

    #[test]
    fn error_keeps_the_id_when_it_can() {
        let (id, e) = decode_request(br#"{"id":42,"op":"nope"}"#).expect_err("unknown");
        assert_eq!(id, Value::from(42));
        assert_eq!(e.code, ErrorCode::UnknownOp);
    }

    #[test]
    fn responses_encode_as_one_line() {
        let line = encode_response(&Response::err(
            Value::from(1),
            ErrorReply::new(ErrorCode::NotFound, "no\nport"),
        ));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let back: Response = serde_json::from_slice(&line).expect("decode");
        assert_eq!(
            back.into_result().expect_err("err").code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn drop_counters_cover_every_reason() {
        use crate::{DropCounters, DropReason};
        let mut a = [0u64; DropReason::COUNT];
        for (i, v) in a.iter_mut().enumerate() {
            *v = i as u64 + 1;
        }
        let c = DropCounters::from_array(&a);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(c.get(*r), i as u64 + 1, "{}", r.name());
        }
        assert_eq!(c.total(), a.iter().sum::<u64>());
    }
}
