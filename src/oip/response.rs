//! Writing an inference response: a JSON object, followed by the binary outputs when the
//! request asked for any.

use serde::Serialize;

use super::{Output, OUTPUT_PROBABILITIES};
use crate::inference::Prediction;
use crate::model::CLASSES;

/// A response body, and the JSON header's length when binary outputs follow it (the
/// `Inference-Header-Content-Length` value; the body is then `application/octet-stream`).
#[derive(Debug)]
pub struct Encoded {
    /// The whole body.
    pub body: Vec<u8>,
    /// Length of the JSON part when binary data follows.
    pub header_length: Option<usize>,
}

#[derive(Serialize)]
struct Response<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputTensor<'a>>,
}

#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// Output data serialised straight from the predictions, without an intermediate array.
enum Data<'a> {
    Probabilities(&'a [Prediction]),
    Prediction(&'a [Prediction]),
}

impl Serialize for Data<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self {
            Data::Probabilities(ps) => {
                let mut seq = s.serialize_seq(Some(ps.len() * CLASSES))?;
                for p in ps.iter() {
                    for v in p.probabilities {
                        seq.serialize_element(&v)?;
                    }
                }
                seq.end()
            }
            Data::Prediction(ps) => {
                let mut seq = s.serialize_seq(Some(ps.len()))?;
                for p in ps.iter() {
                    seq.serialize_element(&i64::from(p.digit))?;
                }
                seq.end()
            }
        }
    }
}

/// The response to a request that asked for `outputs`, answered by `model_version`.
pub fn encode(
    model_name: &str,
    model_version: &str,
    id: Option<&str>,
    outputs: &[Output],
    predictions: &[Prediction],
) -> Encoded {
    let n = predictions.len();
    let mut binary = Vec::new();
    let tensors = outputs
        .iter()
        .map(|o| {
            let probabilities = o.name == OUTPUT_PROBABILITIES;
            let (datatype, shape) = if probabilities {
                ("FP32", vec![n, CLASSES])
            } else {
                ("INT64", vec![n])
            };
            let data = if probabilities {
                Data::Probabilities(predictions)
            } else {
                Data::Prediction(predictions)
            };
            if !o.binary {
                return OutputTensor {
                    name: o.name,
                    datatype,
                    shape,
                    parameters: None,
                    data: Some(data),
                };
            }
            let start = binary.len();
            for p in predictions {
                if probabilities {
                    for v in p.probabilities {
                        binary.extend_from_slice(&v.to_le_bytes());
                    }
                } else {
                    binary.extend_from_slice(&i64::from(p.digit).to_le_bytes());
                }
            }
            OutputTensor {
                name: o.name,
                datatype,
                shape,
                parameters: Some(BinarySize {
                    binary_data_size: binary.len() - start,
                }),
                data: None,
            }
        })
        .collect();
    let response = Response {
        model_name,
        model_version,
        id,
        outputs: tensors,
    };
    // Serialising plain structs, strings and finite numbers cannot fail.
    let mut body = serde_json::to_vec(&response).unwrap_or_default();
    let any_binary = outputs.iter().any(|o| o.binary);
    let header_length = any_binary.then_some(body.len());
    body.extend_from_slice(&binary);
    Encoded {
        body,
        header_length,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::oip::OUTPUT_PREDICTION;

    fn prediction(digit: u8) -> Prediction {
        let mut probabilities = [0.0; CLASSES];
        probabilities[digit as usize] = 1.0;
        Prediction {
            digit,
            probability: 1.0,
            probabilities,
            forward_time: Duration::ZERO,
            batch_size: 1,
        }
    }

    #[test]
    fn json_outputs_in_the_order_asked() {
        let outputs = [
            Output {
                name: OUTPUT_PREDICTION,
                binary: false,
            },
            Output {
                name: OUTPUT_PROBABILITIES,
                binary: false,
            },
        ];
        let e = encode(
            "mnist",
            "2",
            Some("r1"),
            &outputs,
            &[prediction(7), prediction(1)],
        );
        assert_eq!(e.header_length, None);
        let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(v["model_version"], "2");
        assert_eq!(v["id"], "r1");
        assert_eq!(v["outputs"][0]["name"], "prediction");
        assert_eq!(v["outputs"][0]["data"], serde_json::json!([7, 1]));
        assert_eq!(v["outputs"][1]["shape"], serde_json::json!([2, 10]));
        assert_eq!(v["outputs"][1]["data"][7], 1.0);
    }

    #[test]
    fn binary_outputs_follow_the_header_in_order() {
        let outputs = [
            Output {
                name: OUTPUT_PROBABILITIES,
                binary: true,
            },
            Output {
                name: OUTPUT_PREDICTION,
                binary: true,
            },
        ];
        let e = encode("mnist", "1", None, &outputs, &[prediction(3)]);
        let n = e.header_length.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&e.body[..n]).unwrap();
        assert!(v.get("id").is_none());
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 40);
        assert_eq!(v["outputs"][1]["parameters"]["binary_data_size"], 8);
        let rest = &e.body[n..];
        assert_eq!(rest.len(), 48);
        assert_eq!(f32::from_le_bytes(rest[12..16].try_into().unwrap()), 1.0);
        assert_eq!(i64::from_le_bytes(rest[40..48].try_into().unwrap()), 3);
    }
}
