//! The real binary's spans as a Jaeger agent receives them: thrift-compact `Agent.emitBatch`
//! datagrams on UDP, decoded with the thrift crate by field id (jaeger.thrift, agent.thrift).

use std::collections::HashMap;
use std::time::Duration;

use thrift::protocol::{TCompactInputProtocol, TInputProtocol, TMessageType, TType};

use crate::helpers::{post_digit, spawn_binary, terminate};

#[derive(Debug, Clone, PartialEq)]
enum TagValue {
    Str(String),
    Double(f64),
    Bool(bool),
    Long(i64),
    Binary(Vec<u8>),
}

#[derive(Debug, Default)]
struct Span {
    operation: String,
    tags: HashMap<String, TagValue>,
}

#[derive(Debug, Default)]
struct Batch {
    service: String,
    spans: Vec<Span>,
}

type Proto<'a> = TCompactInputProtocol<&'a [u8]>;

fn fields(
    p: &mut Proto,
    mut each: impl FnMut(&mut Proto, i16, TType) -> thrift::Result<bool>,
) -> thrift::Result<()> {
    p.read_struct_begin()?;
    loop {
        let f = p.read_field_begin()?;
        if f.field_type == TType::Stop {
            break;
        }
        let id = f.id.unwrap_or_default();
        if !each(p, id, f.field_type)? {
            p.skip(f.field_type)?;
        }
        p.read_field_end()?;
    }
    p.read_struct_end()
}

fn tag(p: &mut Proto) -> thrift::Result<(String, TagValue)> {
    let (mut key, mut v_type) = (String::new(), -1);
    let (mut s, mut d, mut b, mut l, mut bin) = (None, None, None, None, None);
    fields(p, |p, id, _| {
        match id {
            1 => key = p.read_string()?,
            2 => v_type = p.read_i32()?,
            3 => s = Some(p.read_string()?),
            4 => d = Some(p.read_double()?),
            5 => b = Some(p.read_bool()?),
            6 => l = Some(p.read_i64()?),
            7 => bin = Some(p.read_bytes()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    // TagType: STRING 0, DOUBLE 1, BOOL 2, LONG 3, BINARY 4.
    let value = match v_type {
        0 => TagValue::Str(s.unwrap_or_default()),
        1 => TagValue::Double(d.unwrap_or_default()),
        2 => TagValue::Bool(b.unwrap_or_default()),
        3 => TagValue::Long(l.unwrap_or_default()),
        _ => TagValue::Binary(bin.unwrap_or_default()),
    };
    Ok((key, value))
}

fn tags(p: &mut Proto) -> thrift::Result<HashMap<String, TagValue>> {
    let list = p.read_list_begin()?;
    let mut out = HashMap::new();
    for _ in 0..list.size {
        let (k, v) = tag(p)?;
        out.insert(k, v);
    }
    p.read_list_end()?;
    Ok(out)
}

fn span(p: &mut Proto) -> thrift::Result<Span> {
    let mut span = Span::default();
    fields(p, |p, id, _| {
        match id {
            5 => span.operation = p.read_string()?,
            10 => span.tags = tags(p)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(span)
}

fn batch(p: &mut Proto) -> thrift::Result<Batch> {
    let mut batch = Batch::default();
    fields(p, |p, id, _| {
        match id {
            1 => fields(p, |p, id, _| {
                if id == 1 {
                    batch.service = p.read_string()?;
                    return Ok(true);
                }
                Ok(false)
            })?,
            2 => {
                let list = p.read_list_begin()?;
                for _ in 0..list.size {
                    batch.spans.push(span(p)?);
                }
                p.read_list_end()?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(batch)
}

/// Decodes one datagram: a oneway `emitBatch` call whose argument 1 is the batch.
fn emit_batch(datagram: &[u8]) -> thrift::Result<Batch> {
    let mut p = TCompactInputProtocol::new(datagram);
    let msg = p.read_message_begin()?;
    assert_eq!(msg.name, "emitBatch");
    assert_eq!(msg.message_type, TMessageType::OneWay);
    let mut found = None;
    fields(&mut p, |p, id, _| {
        if id == 1 {
            found = Some(batch(p)?);
            return Ok(true);
        }
        Ok(false)
    })?;
    p.read_message_end()?;
    Ok(found.expect("emitBatch without a batch"))
}

#[tokio::test]
async fn prediction_span_reaches_a_jaeger_agent_with_its_tags() {
    let agent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = agent.local_addr().unwrap().port();
    let (mut child, addr) = spawn_binary(&[
        ("OTEL_TRACES_EXPORTER", "jaeger".into()),
        ("JAEGER_AGENT_HOST", "127.0.0.1".into()),
        ("JAEGER_AGENT_PORT", port.to_string()),
    ])
    .await;
    let res = post_digit(&addr).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    // Shutting down flushes whatever is still queued.
    assert!(terminate(&mut child, Duration::from_secs(15))
        .await
        .success());

    let mut buf = vec![0u8; 65_536];
    let mut batches = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), agent.recv(&mut buf)).await {
        batches.push(emit_batch(&buf[..n]).unwrap());
    }
    assert!(!batches.is_empty(), "no datagram reached the agent");
    assert!(batches.iter().all(|b| b.service == "mnist-api"));
    let spans: Vec<&Span> = batches.iter().flat_map(|b| &b.spans).collect();
    let prediction = spans
        .iter()
        .find(|s| s.operation == "prediction")
        .unwrap_or_else(|| panic!("no prediction span in {spans:?}"));
    assert_eq!(
        prediction.tags["prediction"],
        TagValue::Long(body["prediction"].as_i64().unwrap())
    );
    match prediction.tags["probability"] {
        TagValue::Double(p) => {
            assert!((p - body["probability"].as_f64().unwrap()).abs() < 1e-6)
        }
        ref other => panic!("probability tag is {other:?}"),
    }
    let server = spans
        .iter()
        .find(|s| s.operation == "POST /predict")
        .expect("server span");
    assert_eq!(
        server.tags["http.response.status_code"],
        TagValue::Long(200)
    );
    assert_eq!(server.tags["span.kind"], TagValue::Str("server".into()));
}
