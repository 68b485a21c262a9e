//! Reading an inference request: the JSON header, then each input's data from its `data`
//! array or from the binary section that follows the header.

use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{
    ProtocolError, INPUT_IMAGES, INPUT_NORMALIZED, INPUT_PIXELS, OUTPUT_PREDICTION,
    OUTPUT_PROBABILITIES,
};
use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};

/// An inference request, checked against the model's inputs and outputs.
#[derive(Debug)]
pub struct InferRequest {
    /// Echoed in the response.
    pub id: Option<String>,
    /// The one input sent.
    pub input: Input,
    /// The outputs to return, in the order asked for.
    pub outputs: Vec<Output>,
}

/// The images of a request, in one of the three forms the model takes.
#[derive(Debug)]
pub enum Input {
    /// `input`: `N × 784` values already normalised as the network expects.
    Normalized(Vec<f32>),
    /// `pixels`: `N × 784` raw pixels, 0 background, 255 ink.
    Pixels(Vec<u8>),
    /// `image`: `N` encoded image files.
    Images(Vec<Bytes>),
}

impl Input {
    /// Images in the batch.
    pub fn len(&self) -> usize {
        match self {
            Input::Normalized(v) => v.len() / IMAGE_PIXELS,
            Input::Pixels(v) => v.len() / IMAGE_PIXELS,
            Input::Images(v) => v.len(),
        }
    }

    /// Whether the batch is empty (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One requested output and whether it goes in the binary section.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Output {
    /// `probabilities` or `prediction`.
    pub name: &'static str,
    /// Binary (Triton's extension) rather than a JSON `data` array.
    pub binary: bool,
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(borrow)]
    inputs: Vec<RawInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<RawOutput>>,
}

#[derive(Deserialize)]
struct RawInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    /// Kept unparsed until the shape is checked, so a huge array is never built in memory.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// Reads `body` as an inference request. With `header_length` (the
/// `Inference-Header-Content-Length` header) the JSON is that many leading bytes and binary
/// tensors follow; without it the body is all JSON. At most `max_images` per request.
pub fn parse(
    body: Bytes,
    header_length: Option<&str>,
    max_images: usize,
) -> Result<InferRequest, ProtocolError> {
    let json_len = match header_length {
        None => body.len(),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= body.len())
            .ok_or_else(|| ProtocolError::HeaderLength {
                got: crate::clip::clip(v).to_string(),
                body: body.len(),
            })?,
    };
    let json = std::str::from_utf8(&body[..json_len])
        .map_err(|e| ProtocolError::Json(format!("the JSON header is not UTF-8: {e}")))?;
    let raw: RawRequest =
        serde_json::from_str(json).map_err(|e| ProtocolError::Json(e.to_string()))?;
    let mut binary = BinarySection {
        body: body.slice(json_len..),
        offset: 0,
    };
    let [input] = <[RawInput; 1]>::try_from(raw.inputs)
        .map_err(|inputs| ProtocolError::InputCount(inputs.len()))?;
    let input = read_input(input, &mut binary, max_images)?;
    if binary.offset != binary.body.len() {
        return Err(ProtocolError::Binary(format!(
            "{} bytes follow the tensors the header declares",
            binary.body.len() - binary.offset
        )));
    }
    let binary_default = flag(&raw.parameters, "binary_data_output");
    let outputs = match raw.outputs {
        None => vec![
            Output {
                name: OUTPUT_PROBABILITIES,
                binary: binary_default,
            },
            Output {
                name: OUTPUT_PREDICTION,
                binary: binary_default,
            },
        ],
        Some(asked) => asked
            .into_iter()
            .map(|o| {
                let name = match o.name.as_str() {
                    OUTPUT_PROBABILITIES => OUTPUT_PROBABILITIES,
                    OUTPUT_PREDICTION => OUTPUT_PREDICTION,
                    other => {
                        return Err(ProtocolError::UnknownOutput(
                            crate::clip::clip(other).to_string(),
                        ))
                    }
                };
                let binary = match o.parameters.get("binary_data") {
                    Some(Value::Bool(b)) => *b,
                    _ => binary_default,
                };
                Ok(Output { name, binary })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(InferRequest {
        id: raw.id.map(|id| crate::clip::clip(&id).to_string()),
        input,
        outputs,
    })
}

/// A boolean parameter; anything but `true` is false, and unknown parameters are ignored, as
/// the protocol asks.
fn flag(parameters: &Map<String, Value>, name: &str) -> bool {
    matches!(parameters.get(name), Some(Value::Bool(true)))
}

struct BinarySection {
    body: Bytes,
    offset: usize,
}

impl BinarySection {
    /// The next `size` bytes, for the input that declared them.
    fn take(&mut self, input: &str, size: &Value) -> Result<Bytes, ProtocolError> {
        let size = size
            .as_u64()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| {
                ProtocolError::Binary(format!(
                    "input `{input}`: binary_data_size must be a non-negative integer"
                ))
            })?;
        let end = self
            .offset
            .checked_add(size)
            .filter(|end| *end <= self.body.len())
            .ok_or_else(|| {
                ProtocolError::Binary(format!(
                    "input `{input}` declares {size} bytes but only {} follow the JSON header",
                    self.body.len() - self.offset
                ))
            })?;
        let bytes = self.body.slice(self.offset..end);
        self.offset = end;
        Ok(bytes)
    }
}

fn read_input(
    raw: RawInput,
    binary: &mut BinarySection,
    max_images: usize,
) -> Result<Input, ProtocolError> {
    let side = IMAGE_SIDE as i64;
    let (name, datatype, images) = match raw.name.as_str() {
        INPUT_NORMALIZED => (
            INPUT_NORMALIZED,
            "FP32",
            batch_of(&raw.shape, &[1, side, side]),
        ),
        INPUT_PIXELS => (INPUT_PIXELS, "UINT8", batch_of(&raw.shape, &[side, side])),
        INPUT_IMAGES => (INPUT_IMAGES, "BYTES", batch_of(&raw.shape, &[])),
        other => {
            return Err(ProtocolError::UnknownInput(
                crate::clip::clip(other).to_string(),
            ))
        }
    };
    if raw.datatype != datatype {
        return Err(ProtocolError::Datatype {
            input: name,
            want: datatype,
            got: crate::clip::clip(&raw.datatype).to_string(),
        });
    }
    let want_shape = match name {
        INPUT_NORMALIZED => "[N,1,28,28]",
        INPUT_PIXELS => "[N,28,28]",
        _ => "[N]",
    };
    let n = images.ok_or_else(|| ProtocolError::Shape {
        input: name,
        want: want_shape,
        got: raw.shape.iter().copied().take(8).collect(),
    })?;
    if n > max_images {
        return Err(ProtocolError::TooManyImages {
            max: max_images,
            got: n,
        });
    }
    let elements = if name == INPUT_IMAGES {
        n
    } else {
        n * IMAGE_PIXELS
    };
    let count_error = |got| ProtocolError::ElementCount {
        input: name,
        shape: raw.shape.clone(),
        want: elements,
        got,
    };
    let element_error = |index| ProtocolError::Element {
        input: name,
        index,
        datatype,
    };
    if let Some(size) = raw.parameters.get("binary_data_size") {
        let bytes = binary.take(name, size)?;
        return match name {
            INPUT_NORMALIZED => {
                if bytes.len() != elements * 4 {
                    return Err(count_error(bytes.len() / 4));
                }
                let values: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                match values.iter().position(|v| !v.is_finite()) {
                    Some(i) => Err(element_error(i)),
                    None => Ok(Input::Normalized(values)),
                }
            }
            INPUT_PIXELS => {
                if bytes.len() != elements {
                    return Err(count_error(bytes.len()));
                }
                Ok(Input::Pixels(bytes.to_vec()))
            }
            _ => {
                let files = split_bytes_elements(&bytes).map_err(ProtocolError::Binary)?;
                if files.len() != elements {
                    return Err(count_error(files.len()));
                }
                Ok(Input::Images(files))
            }
        };
    }
    let data = raw.data.ok_or(ProtocolError::NoData(name))?;
    let mut flat = Flat::new(elements, datatype == "BYTES");
    let mut de = serde_json::Deserializer::from_str(data.get());
    match Collect(&mut flat).deserialize(&mut de) {
        Ok(()) => {}
        Err(_) if flat.over => return Err(count_error(flat.count())),
        Err(_) => return Err(element_error(flat.count())),
    }
    if flat.count() != elements {
        return Err(count_error(flat.count()));
    }
    match name {
        INPUT_NORMALIZED => {
            let values: Vec<f32> = flat.numbers.iter().map(|v| *v as f32).collect();
            match values.iter().position(|v| !v.is_finite()) {
                Some(i) => Err(element_error(i)),
                None => Ok(Input::Normalized(values)),
            }
        }
        INPUT_PIXELS => flat
            .numbers
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (v.fract() == 0.0 && (0.0..=255.0).contains(v))
                    .then_some(*v as u8)
                    .ok_or_else(|| element_error(i))
            })
            .collect::<Result<Vec<u8>, _>>()
            .map(Input::Pixels),
        _ => Ok(Input::Images(
            flat.strings.into_iter().map(Bytes::from).collect(),
        )),
    }
}

/// `N` if `shape` is `[N, rest...]` with `N ≥ 1`.
fn batch_of(shape: &[i64], rest: &[i64]) -> Option<usize> {
    let (&n, tail) = shape.split_first()?;
    (tail == rest && n >= 1)
        .then(|| usize::try_from(n).ok())
        .flatten()
}

/// BYTES elements in binary form: each a 4-byte little-endian length, then that many bytes.
fn split_bytes_elements(bytes: &Bytes) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| format!("BYTES element {} has a truncated length prefix", out.len()))?;
        let start = at + 4;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| {
                format!(
                    "BYTES element {} declares {len} bytes but only {} remain",
                    out.len(),
                    bytes.len() - start
                )
            })?;
        out.push(bytes.slice(start..end));
        at = end;
    }
    Ok(out)
}

/// The elements of a (possibly nested) JSON array, in row-major order, at most `limit`.
struct Flat {
    limit: usize,
    strings_wanted: bool,
    numbers: Vec<f64>,
    strings: Vec<Vec<u8>>,
    /// Set when more than `limit` elements came: the count is wrong, not an element.
    over: bool,
}

impl Flat {
    fn new(limit: usize, strings_wanted: bool) -> Self {
        Self {
            limit,
            strings_wanted,
            numbers: Vec::with_capacity(if strings_wanted { 0 } else { limit }),
            strings: Vec::new(),
            over: false,
        }
    }

    fn count(&self) -> usize {
        self.numbers.len() + self.strings.len()
    }

    fn room<E: serde::de::Error>(&mut self) -> Result<(), E> {
        if self.count() >= self.limit {
            self.over = true;
            return Err(E::custom("more elements than the shape"));
        }
        Ok(())
    }

    fn number<E: serde::de::Error>(&mut self, v: f64) -> Result<(), E> {
        self.room()?;
        if self.strings_wanted {
            return Err(E::custom("number in a BYTES tensor"));
        }
        self.numbers.push(v);
        Ok(())
    }
}

/// Walks nested arrays, appending every leaf to the [`Flat`].
struct Collect<'a>(&'a mut Flat);

impl<'de> DeserializeSeed<'de> for Collect<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Collect<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a (nested) array of tensor elements")
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.0.number(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.0.number(v as f64)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.0.number(v as f64)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.room()?;
        if !self.0.strings_wanted {
            return Err(E::custom("string in a numeric tensor"));
        }
        self.0.strings.push(v.as_bytes().to_vec());
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Collect(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp32_json(n: usize, value: f32) -> String {
        let data = vec![value.to_string(); n * IMAGE_PIXELS].join(",");
        format!(
            r#"{{"id":"a","inputs":[{{"name":"input","shape":[{n},1,28,28],"datatype":"FP32","data":[{data}]}}]}}"#
        )
    }

    #[test]
    fn json_fp32_with_default_outputs() {
        let r = parse(Bytes::from(fp32_json(2, 0.5)), None, 64).unwrap();
        assert_eq!(r.id.as_deref(), Some("a"));
        assert!(matches!(&r.input, Input::Normalized(v) if v.len() == 2 * 784));
        assert_eq!(r.outputs.len(), 2);
        assert!(r.outputs.iter().all(|o| !o.binary));
    }

    #[test]
    fn nested_data_reads_in_row_major_order() {
        let row = format!("[{}]", vec!["7"; 28].join(","));
        let image = format!("[{}]", vec![row.as_str(); 28].join(","));
        let body = format!(
            r#"{{"inputs":[{{"name":"pixels","shape":[1,28,28],"datatype":"UINT8","data":[{image}]}}],"outputs":[{{"name":"prediction"}}]}}"#
        );
        let r = parse(Bytes::from(body), None, 64).unwrap();
        assert!(
            matches!(&r.input, Input::Pixels(v) if v.len() == 784 && v.iter().all(|p| *p == 7))
        );
        assert_eq!(
            r.outputs,
            vec![Output {
                name: "prediction",
                binary: false
            }]
        );
    }

    #[test]
    fn binary_bytes_elements_and_binary_outputs() {
        let header = r#"{"inputs":[{"name":"image","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":13}}],"parameters":{"binary_data_output":true},"outputs":[{"name":"probabilities"},{"name":"prediction","parameters":{"binary_data":false}}]}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(b"abc");
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(b"de");
        let len = header.len().to_string();
        let r = parse(Bytes::from(body), Some(&len), 64).unwrap();
        match &r.input {
            Input::Images(files) => assert_eq!(files, &[Bytes::from("abc"), Bytes::from("de")]),
            other => panic!("{other:?}"),
        }
        assert!(r.outputs[0].binary && !r.outputs[1].binary);
    }

    #[test]
    fn every_caller_mistake_is_a_protocol_error_naming_it() {
        let cases: Vec<(String, Option<&str>, &str)> = vec![
            ("{".into(), None, "invalid inference request"),
            (fp32_json(1, 0.0), Some("99999"), "Inference-Header-Content-Length"),
            (r#"{"inputs":[]}"#.into(), None, "exactly one input"),
            (fp32_json(1, 0.0).replace("\"input\"", "\"x\""), None, "unknown input `x`"),
            (fp32_json(1, 0.0).replace("FP32", "INT8"), None, "must be FP32, got INT8"),
            (fp32_json(1, 0.0).replace("[1,1,28,28]", "[1,28,28]"), None, "shape [N,1,28,28]"),
            (fp32_json(1, 0.0).replace("[1,1,28,28]", "[2,1,28,28]"), None, "its data holds 784"),
            (fp32_json(1, 0.0).replace("[0,", "[\"x\","), None, "element 0 is not a valid FP32"),
            (fp32_json(65, 0.0), None, "at most 64 per request, got 65"),
            (
                format!(
                    r#"{{"inputs":[{{"name":"pixels","shape":[1,28,28],"datatype":"UINT8","data":[1,300{}]}}]}}"#,
                    ",0".repeat(782)
                ),
                None,
                "element 1 is not a valid UINT8",
            ),
            (
                r#"{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES"}]}"#.into(),
                None,
                "neither `data` nor",
            ),
            (
                fp32_json(1, 0.0).replace("]}]}", "]}],\"outputs\":[{\"name\":\"logits\"}]}"),
                None,
                "unknown output `logits`",
            ),
            (
                r#"{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":8}}]}"#.into(),
                Some("0"),
                "invalid inference request",
            ),
        ];
        for (body, header, want) in cases {
            let e = parse(Bytes::from(body.clone()), header, 64)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(want),
                "{want:?} not in {e:?} for {}",
                &body[..body.len().min(120)]
            );
        }
    }

    #[test]
    fn a_huge_array_is_refused_without_being_built() {
        let data = vec!["1"; 784 * 1000].join(",");
        let body = format!(
            r#"{{"inputs":[{{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":[{data}]}}]}}"#
        );
        let e = parse(Bytes::from(body), None, 64).unwrap_err();
        assert!(
            matches!(e, ProtocolError::ElementCount { got: 784, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn truncated_binary_is_refused() {
        let header = r#"{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":9}}]}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&10u32.to_le_bytes());
        body.extend_from_slice(b"abcde");
        let len = header.len().to_string();
        let e = parse(Bytes::from(body), Some(&len), 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("declares 10 bytes but only 5 remain"), "{e}");
    }
}
