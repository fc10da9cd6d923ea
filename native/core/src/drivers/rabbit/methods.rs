//! amqp_client's records as plain tuples (rabbit_framing.hrl, amqp_client.hrl
//! of RabbitMQ 3.x): the methods `{amqp_call, Method}` carries, the
//! `#'basic.publish'{}` and `#amqp_msg{}` of `{amqp_publish, Method, Msg}`,
//! and the `_ok` records answered. Tables are amqp_client's
//! `[{Name, Type, Value}]`.

use std::sync::Arc;

use lapin::options::*;
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::error::{Error, Result};
use crate::term::Term;

/// A synchronous method, run on the worker's channel.
#[derive(Debug, Clone)]
pub enum Method {
    ExchangeDeclare {
        exchange: ShortString,
        kind: String,
        options: ExchangeDeclareOptions,
        arguments: FieldTable,
    },
    ExchangeDelete {
        exchange: ShortString,
        options: ExchangeDeleteOptions,
    },
    ExchangeBind {
        unbind: bool,
        destination: ShortString,
        source: ShortString,
        routing_key: ShortString,
        nowait: bool,
        arguments: FieldTable,
    },
    QueueDeclare {
        queue: ShortString,
        options: QueueDeclareOptions,
        arguments: FieldTable,
    },
    QueueBind {
        queue: ShortString,
        exchange: ShortString,
        routing_key: ShortString,
        options: QueueBindOptions,
        arguments: FieldTable,
    },
    QueueUnbind {
        queue: ShortString,
        exchange: ShortString,
        routing_key: ShortString,
        arguments: FieldTable,
    },
    QueuePurge {
        queue: ShortString,
        options: QueuePurgeOptions,
    },
    QueueDelete {
        queue: ShortString,
        options: QueueDeleteOptions,
    },
    BasicGet {
        queue: ShortString,
        options: BasicGetOptions,
    },
    BasicAck {
        tag: u64,
        options: BasicAckOptions,
    },
    BasicReject {
        tag: u64,
        options: BasicRejectOptions,
    },
    BasicNack {
        tag: u64,
        options: BasicNackOptions,
    },
}

/// One message for `basic.publish`, kept whole so it can be sent again
/// after a reconnection.
#[derive(Debug)]
pub struct Publish {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub options: BasicPublishOptions,
    pub properties: BasicProperties,
    pub payload: Vec<u8>,
}

pub enum RabbitRequest {
    Call(Method),
    Publish(Arc<Publish>),
}

/// `{amqp_call, Method}` or `{amqp_publish, #'basic.publish'{}, #amqp_msg{}}`.
pub fn parse_request(request: Term) -> Result<RabbitRequest> {
    match &request {
        Term::Tuple(t) if t.len() == 2 && t[0].as_atom() == Some("amqp_call") => {
            parse_method(&t[1]).map(RabbitRequest::Call)
        }
        Term::Tuple(t) if t.len() == 3 && t[0].as_atom() == Some("amqp_publish") => {
            parse_publish(&t[1], &t[2]).map(|p| RabbitRequest::Publish(Arc::new(p)))
        }
        other => Err(Error::BadRequest(format!(
            "expected {{amqp_call, Method}} or {{amqp_publish, #'basic.publish'{{}}, #amqp_msg{{}}}}, got {}",
            other.describe()
        ))),
    }
}

/// A record's fields after its name, checked for its arity.
struct Record<'a> {
    name: &'a str,
    fields: &'a [Term],
}

fn record<'a>(t: &'a Term, what: &str) -> Result<Record<'a>> {
    match t {
        Term::Tuple(items) if !items.is_empty() => match items[0].as_atom() {
            Some(name) => Ok(Record {
                name,
                fields: &items[1..],
            }),
            None => Err(not_a_record(t, what)),
        },
        _ => Err(not_a_record(t, what)),
    }
}

fn not_a_record(t: &Term, what: &str) -> Error {
    Error::BadRequest(format!("expected {what} record, got {}", t.describe()))
}

impl Record<'_> {
    fn arity(&self, n: usize) -> Result<&Self> {
        if self.fields.len() == n {
            Ok(self)
        } else {
            Err(Error::BadRequest(format!(
                "#'{}'{{}} has {n} fields, got a tuple with {}",
                self.name,
                self.fields.len()
            )))
        }
    }

    fn bad(&self, i: usize, expected: &str) -> Error {
        Error::BadRequest(format!(
            "#'{}'{{}} field {}: expected {expected}, got {}",
            self.name,
            i + 2,
            self.fields[i].describe()
        ))
    }

    fn bool(&self, i: usize) -> Result<bool> {
        match self.fields[i].as_atom() {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            _ => Err(self.bad(i, "true or false")),
        }
    }

    fn short(&self, i: usize) -> Result<ShortString> {
        short_string(&self.fields[i]).ok_or_else(|| self.bad(i, "a binary of at most 255 bytes"))
    }

    /// A short string that may be `undefined` (routing keys, queue names).
    fn short_or_empty(&self, i: usize) -> Result<ShortString> {
        match self.fields[i].as_atom() {
            Some("undefined") => Ok(ShortString::from("")),
            _ => self.short(i),
        }
    }

    fn table(&self, i: usize) -> Result<FieldTable> {
        table(&self.fields[i]).map_err(|e| self.bad(i, &format!("an AMQP table ({e})")))
    }

    fn uint(&self, i: usize, max: u64) -> Result<u64> {
        match self.fields[i] {
            Term::Int(n) if n >= 0 && (n as u64) <= max => Ok(n as u64),
            _ => Err(self.bad(i, &format!("an integer between 0 and {max}"))),
        }
    }
}

fn short_string(t: &Term) -> Option<ShortString> {
    let text = match t {
        Term::Bin(b) => String::from_utf8(b.clone()).ok()?,
        Term::List(_) => t.as_text()?,
        _ => return None,
    };
    ShortString::try_new(text).ok()
}

pub fn parse_method(t: &Term) -> Result<Method> {
    let r = record(t, "an AMQP method")?;
    let m = match r.name {
        "exchange.declare" => {
            r.arity(9)?;
            let kind = r.short(2)?.to_string();
            Method::ExchangeDeclare {
                exchange: r.short(1)?,
                kind,
                options: ExchangeDeclareOptions {
                    passive: r.bool(3)?,
                    durable: r.bool(4)?,
                    auto_delete: r.bool(5)?,
                    internal: r.bool(6)?,
                    nowait: r.bool(7)?,
                },
                arguments: r.table(8)?,
            }
        }
        "exchange.delete" => {
            r.arity(4)?;
            Method::ExchangeDelete {
                exchange: r.short(1)?,
                options: ExchangeDeleteOptions {
                    if_unused: r.bool(2)?,
                    nowait: r.bool(3)?,
                },
            }
        }
        "exchange.bind" | "exchange.unbind" => {
            r.arity(6)?;
            Method::ExchangeBind {
                unbind: r.name == "exchange.unbind",
                destination: r.short(1)?,
                source: r.short(2)?,
                routing_key: r.short_or_empty(3)?,
                nowait: r.bool(4)?,
                arguments: r.table(5)?,
            }
        }
        "queue.declare" => {
            r.arity(8)?;
            Method::QueueDeclare {
                queue: r.short_or_empty(1)?,
                options: QueueDeclareOptions {
                    passive: r.bool(2)?,
                    durable: r.bool(3)?,
                    exclusive: r.bool(4)?,
                    auto_delete: r.bool(5)?,
                    nowait: r.bool(6)?,
                },
                arguments: r.table(7)?,
            }
        }
        "queue.bind" => {
            r.arity(6)?;
            Method::QueueBind {
                queue: r.short_or_empty(1)?,
                exchange: r.short(2)?,
                routing_key: r.short_or_empty(3)?,
                options: QueueBindOptions { nowait: r.bool(4)? },
                arguments: r.table(5)?,
            }
        }
        "queue.unbind" => {
            r.arity(5)?;
            Method::QueueUnbind {
                queue: r.short_or_empty(1)?,
                exchange: r.short(2)?,
                routing_key: r.short_or_empty(3)?,
                arguments: r.table(4)?,
            }
        }
        "queue.purge" => {
            r.arity(3)?;
            Method::QueuePurge {
                queue: r.short_or_empty(1)?,
                options: QueuePurgeOptions { nowait: r.bool(2)? },
            }
        }
        "queue.delete" => {
            r.arity(5)?;
            Method::QueueDelete {
                queue: r.short_or_empty(1)?,
                options: QueueDeleteOptions {
                    if_unused: r.bool(2)?,
                    if_empty: r.bool(3)?,
                    nowait: r.bool(4)?,
                },
            }
        }
        "basic.get" => {
            r.arity(3)?;
            Method::BasicGet {
                queue: r.short_or_empty(1)?,
                options: BasicGetOptions { no_ack: r.bool(2)? },
            }
        }
        "basic.ack" => {
            r.arity(2)?;
            Method::BasicAck {
                tag: r.uint(0, u64::MAX >> 1)?,
                options: BasicAckOptions {
                    multiple: r.bool(1)?,
                },
            }
        }
        "basic.reject" => {
            r.arity(2)?;
            Method::BasicReject {
                tag: r.uint(0, u64::MAX >> 1)?,
                options: BasicRejectOptions {
                    requeue: r.bool(1)?,
                },
            }
        }
        "basic.nack" => {
            r.arity(3)?;
            Method::BasicNack {
                tag: r.uint(0, u64::MAX >> 1)?,
                options: BasicNackOptions {
                    multiple: r.bool(1)?,
                    requeue: r.bool(2)?,
                },
            }
        }
        "basic.publish" => return Err(Error::BadRequest(
            "basic.publish carries a message: send {amqp_publish, #'basic.publish'{}, #amqp_msg{}}"
                .into(),
        )),
        name @ ("confirm.select"
        | "tx.select"
        | "tx.commit"
        | "tx.rollback"
        | "basic.qos"
        | "basic.consume"
        | "basic.cancel"
        | "basic.recover"
        | "basic.recover_async"
        | "channel.flow"
        | "channel.close") => {
            return Err(Error::BadRequest(format!(
                "{name} would change the state of a channel the pool owns (confirms follow \
                 confirms_enabled; consumers are not supported); it is refused"
            )))
        }
        other => {
            return Err(Error::BadRequest(format!(
                "unknown or unsupported AMQP method {other}"
            )))
        }
    };
    Ok(m)
}

fn parse_publish(method: &Term, msg: &Term) -> Result<Publish> {
    let r = record(method, "a #'basic.publish'{}")?;
    if r.name != "basic.publish" {
        return Err(not_a_record(method, "a #'basic.publish'{}"));
    }
    r.arity(5)?;
    if r.bool(4)? {
        return Err(Error::BadRequest(
            "#'basic.publish'{immediate = true} is not implemented by RabbitMQ".into(),
        ));
    }
    let m = record(msg, "an #amqp_msg{}")?;
    if m.name != "amqp_msg" {
        return Err(not_a_record(msg, "an #amqp_msg{}"));
    }
    m.arity(2)?;
    let mut payload = Vec::new();
    if !m.fields[1].to_iodata(&mut payload) {
        return Err(m.bad(1, "a binary or iodata"));
    }
    Ok(Publish {
        exchange: r.short_or_empty(1)?,
        routing_key: r.short_or_empty(2)?,
        options: BasicPublishOptions {
            mandatory: r.bool(3)?,
            immediate: false,
        },
        properties: properties(&m.fields[0])?,
        payload,
    })
}

/// `#'P_basic'{}`: every field `undefined` or its value.
fn properties(t: &Term) -> Result<BasicProperties> {
    let r = record(t, "a #'P_basic'{}")?;
    if r.name != "P_basic" {
        return Err(not_a_record(t, "a #'P_basic'{}"));
    }
    r.arity(14)?;
    let set = |i: usize| r.fields[i].as_atom() != Some("undefined");
    let mut p = BasicProperties::default();
    type With = fn(BasicProperties, ShortString) -> BasicProperties;
    let shorts: [(usize, With); 10] = [
        (0, BasicProperties::with_content_type),
        (1, BasicProperties::with_content_encoding),
        (5, BasicProperties::with_correlation_id),
        (6, BasicProperties::with_reply_to),
        (7, BasicProperties::with_expiration),
        (8, BasicProperties::with_message_id),
        (10, BasicProperties::with_type),
        (11, BasicProperties::with_user_id),
        (12, BasicProperties::with_app_id),
        (13, BasicProperties::with_cluster_id),
    ];
    for (i, with) in shorts {
        if set(i) {
            p = with(p, r.short(i)?);
        }
    }
    if set(2) {
        p = p.with_headers(r.table(2)?);
    }
    if set(3) {
        p = p.with_delivery_mode(r.uint(3, 255)? as u8);
    }
    if set(4) {
        p = p.with_priority(r.uint(4, 255)? as u8);
    }
    if set(9) {
        p = p.with_timestamp(r.uint(9, u64::MAX >> 1)?);
    }
    Ok(p)
}

/// `#'P_basic'{}` of a received message.
pub fn properties_term(p: &BasicProperties) -> Term {
    let s = |v: &Option<ShortString>| v.as_ref().map_or(undefined(), |s| Term::from(s.as_str()));
    let n = |v: Option<u64>| v.map_or(undefined(), |n| Term::Int(n as i64));
    Term::tuple(vec![
        Term::atom("P_basic"),
        s(p.content_type()),
        s(p.content_encoding()),
        p.headers().as_ref().map_or(undefined(), table_term),
        n(p.delivery_mode().map(u64::from)),
        n(p.priority().map(u64::from)),
        s(p.correlation_id()),
        s(p.reply_to()),
        s(p.expiration()),
        s(p.message_id()),
        n(*p.timestamp()),
        s(p.kind()),
        s(p.user_id()),
        s(p.app_id()),
        s(p.cluster_id()),
    ])
}

fn undefined() -> Term {
    Term::atom("undefined")
}

/// amqp_client's table: `[{Name, Type, Value}]`.
fn table(t: &Term) -> std::result::Result<FieldTable, String> {
    let Term::List(items) = t else {
        return Err("not a list".into());
    };
    let mut out = FieldTable::default();
    for item in items {
        match item {
            Term::Tuple(e) if e.len() == 3 => {
                let key = short_string(&e[0]).ok_or("a name that is not a short binary")?;
                let ty = e[1].as_atom().ok_or("a type that is not an atom")?;
                out.insert(key, value(ty, &e[2])?);
            }
            _ => return Err("an entry that is not {Name, Type, Value}".into()),
        }
    }
    Ok(out)
}

fn value(ty: &str, v: &Term) -> std::result::Result<AMQPValue, String> {
    let int = |min: i64, max: i64| match v {
        Term::Int(n) if (min..=max).contains(n) => Ok(*n),
        _ => Err(format!("{ty} {} out of range", v.describe())),
    };
    let float = || match v {
        Term::Float(f) => Ok(*f),
        Term::Int(n) => Ok(*n as f64),
        _ => Err(format!("{ty} {} is not a number", v.describe())),
    };
    let bytes = || {
        let mut b = Vec::new();
        if v.to_iodata(&mut b) {
            Ok(b)
        } else {
            Err(format!("{ty} {} is not a binary", v.describe()))
        }
    };
    Ok(match ty {
        "longstr" => AMQPValue::LongString(LongString::from(bytes()?)),
        "binary" => AMQPValue::ByteArray(ByteArray::from(bytes()?)),
        "bool" => match v.as_atom() {
            Some("true") => AMQPValue::Boolean(true),
            Some("false") => AMQPValue::Boolean(false),
            _ => return Err(format!("bool {} is not true or false", v.describe())),
        },
        "byte" => AMQPValue::ShortShortInt(int(i8::MIN.into(), i8::MAX.into())? as i8),
        "unsignedbyte" => AMQPValue::ShortShortUInt(int(0, u8::MAX.into())? as u8),
        "short" => AMQPValue::ShortInt(int(i16::MIN.into(), i16::MAX.into())? as i16),
        "unsignedshort" => AMQPValue::ShortUInt(int(0, u16::MAX.into())? as u16),
        "signedint" => AMQPValue::LongInt(int(i32::MIN.into(), i32::MAX.into())? as i32),
        "unsignedint" => AMQPValue::LongUInt(int(0, u32::MAX.into())? as u32),
        "long" => AMQPValue::LongLongInt(int(i64::MIN, i64::MAX)?),
        "timestamp" => AMQPValue::Timestamp(int(0, i64::MAX)? as u64),
        "float" => AMQPValue::Float(float()? as f32),
        "double" => AMQPValue::Double(float()?),
        "void" => AMQPValue::Void,
        "table" => AMQPValue::FieldTable(table(v)?),
        "array" => match v {
            Term::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Term::Tuple(e) if e.len() == 2 => {
                            let ty = e[0].as_atom().ok_or("an array type that is not an atom")?;
                            out.push(value(ty, &e[1])?);
                        }
                        _ => return Err("an array element that is not {Type, Value}".into()),
                    }
                }
                AMQPValue::FieldArray(FieldArray::from(out))
            }
            _ => return Err("array is not a list".into()),
        },
        "decimal" => match v {
            Term::Tuple(e) if e.len() == 2 => match (&e[0], &e[1]) {
                (Term::Int(s), Term::Int(n))
                    if (0..=255).contains(s) && (0..=i64::from(u32::MAX)).contains(n) =>
                {
                    AMQPValue::DecimalValue(DecimalValue {
                        scale: *s as u8,
                        value: *n as u32,
                    })
                }
                _ => return Err("decimal out of range".into()),
            },
            _ => return Err("decimal is not {Scale, Value}".into()),
        },
        other => return Err(format!("unknown field type {other}")),
    })
}

fn table_term(t: &FieldTable) -> Term {
    Term::List(
        t.into_iter()
            .map(|(k, v)| {
                let (ty, value) = value_term(v);
                Term::tuple(vec![Term::from(k.as_str()), Term::atom(ty), value])
            })
            .collect(),
    )
}

fn value_term(v: &AMQPValue) -> (&'static str, Term) {
    match v {
        AMQPValue::Boolean(b) => ("bool", Term::from(*b)),
        AMQPValue::ShortShortInt(n) => ("byte", Term::Int((*n).into())),
        AMQPValue::ShortShortUInt(n) => ("unsignedbyte", Term::Int((*n).into())),
        AMQPValue::ShortInt(n) => ("short", Term::Int((*n).into())),
        AMQPValue::ShortUInt(n) => ("unsignedshort", Term::Int((*n).into())),
        AMQPValue::LongInt(n) => ("signedint", Term::Int((*n).into())),
        AMQPValue::LongUInt(n) => ("unsignedint", Term::Int((*n).into())),
        AMQPValue::LongLongInt(n) => ("long", Term::Int(*n)),
        AMQPValue::Float(f) => ("float", Term::Float((*f).into())),
        AMQPValue::Double(f) => ("double", Term::Float(*f)),
        AMQPValue::DecimalValue(d) => (
            "decimal",
            Term::tuple(vec![Term::Int(d.scale.into()), Term::Int(d.value.into())]),
        ),
        AMQPValue::ShortString(s) => ("longstr", Term::from(s.as_str())),
        AMQPValue::LongString(s) => ("longstr", Term::bin(s.as_bytes())),
        AMQPValue::ByteArray(b) => ("binary", Term::bin(b.as_slice())),
        AMQPValue::Timestamp(t) => ("timestamp", Term::Int(*t as i64)),
        AMQPValue::FieldTable(t) => ("table", table_term(t)),
        AMQPValue::FieldArray(a) => (
            "array",
            Term::List(
                a.as_slice()
                    .iter()
                    .map(|v| {
                        let (ty, value) = value_term(v);
                        Term::tuple(vec![Term::atom(ty), value])
                    })
                    .collect(),
            ),
        ),
        AMQPValue::Void => ("void", undefined()),
    }
}

fn ok_record(name: &str, fields: Vec<Term>) -> Term {
    let mut items = vec![Term::atom(name)];
    items.extend(fields);
    Term::tuple(items)
}

/// Runs `m` on `ch`; the answer is what amqp_channel:call returns (`ok`
/// for a `nowait` method).
pub async fn run(ch: &Channel, m: &Method) -> lapin::Result<Term> {
    let done = |nowait: bool, name: &str| {
        if nowait {
            Term::atom("ok")
        } else {
            ok_record(name, vec![])
        }
    };
    Ok(match m {
        Method::ExchangeDeclare {
            exchange,
            kind,
            options,
            arguments,
        } => {
            let kind = match kind.as_str() {
                "direct" => ExchangeKind::Direct,
                "fanout" => ExchangeKind::Fanout,
                "topic" => ExchangeKind::Topic,
                "headers" => ExchangeKind::Headers,
                other => ExchangeKind::Custom(other.to_string()),
            };
            ch.exchange_declare(exchange.clone(), kind, *options, arguments.clone())
                .await?;
            done(options.nowait, "exchange.declare_ok")
        }
        Method::ExchangeDelete { exchange, options } => {
            ch.exchange_delete(exchange.clone(), *options).await?;
            done(options.nowait, "exchange.delete_ok")
        }
        Method::ExchangeBind {
            unbind,
            destination,
            source,
            routing_key,
            nowait,
            arguments,
        } => {
            let (d, s, k, a) = (
                destination.clone(),
                source.clone(),
                routing_key.clone(),
                arguments.clone(),
            );
            if *unbind {
                let o = ExchangeUnbindOptions { nowait: *nowait };
                ch.exchange_unbind(d, s, k, o, a).await?;
                done(*nowait, "exchange.unbind_ok")
            } else {
                let o = ExchangeBindOptions { nowait: *nowait };
                ch.exchange_bind(d, s, k, o, a).await?;
                done(*nowait, "exchange.bind_ok")
            }
        }
        Method::QueueDeclare {
            queue,
            options,
            arguments,
        } => {
            let q = ch
                .queue_declare(queue.clone(), *options, arguments.clone())
                .await?;
            if options.nowait {
                Term::atom("ok")
            } else {
                ok_record(
                    "queue.declare_ok",
                    vec![
                        Term::from(q.name().as_str()),
                        Term::Int(q.message_count().into()),
                        Term::Int(q.consumer_count().into()),
                    ],
                )
            }
        }
        Method::QueueBind {
            queue,
            exchange,
            routing_key,
            options,
            arguments,
        } => {
            ch.queue_bind(
                queue.clone(),
                exchange.clone(),
                routing_key.clone(),
                *options,
                arguments.clone(),
            )
            .await?;
            done(options.nowait, "queue.bind_ok")
        }
        Method::QueueUnbind {
            queue,
            exchange,
            routing_key,
            arguments,
        } => {
            ch.queue_unbind(
                queue.clone(),
                exchange.clone(),
                routing_key.clone(),
                arguments.clone(),
            )
            .await?;
            ok_record("queue.unbind_ok", vec![])
        }
        Method::QueuePurge { queue, options } => {
            let n = ch.queue_purge(queue.clone(), *options).await?;
            if options.nowait {
                Term::atom("ok")
            } else {
                ok_record("queue.purge_ok", vec![Term::Int(n.into())])
            }
        }
        Method::QueueDelete { queue, options } => {
            let n = ch.queue_delete(queue.clone(), *options).await?;
            if options.nowait {
                Term::atom("ok")
            } else {
                ok_record("queue.delete_ok", vec![Term::Int(n.into())])
            }
        }
        Method::BasicGet { queue, options } => match ch.basic_get(queue.clone(), *options).await? {
            None => ok_record("basic.get_empty", vec![Term::bin("")]),
            Some(got) => {
                let d = &got.delivery;
                Term::tuple(vec![
                    ok_record(
                        "basic.get_ok",
                        vec![
                            Term::Int(d.delivery_tag as i64),
                            Term::from(d.redelivered),
                            Term::from(d.exchange.as_str()),
                            Term::from(d.routing_key.as_str()),
                            Term::Int(got.message_count.into()),
                        ],
                    ),
                    ok_record(
                        "amqp_msg",
                        vec![properties_term(&d.properties), Term::bin(d.data.clone())],
                    ),
                ])
            }
        },
        Method::BasicAck { tag, options } => {
            ch.basic_ack(*tag, *options).await?;
            Term::atom("ok")
        }
        Method::BasicReject { tag, options } => {
            ch.basic_reject(*tag, *options).await?;
            Term::atom("ok")
        }
        Method::BasicNack { tag, options } => {
            ch.basic_nack(*tag, *options).await?;
            Term::atom("ok")
        }
    })
}
