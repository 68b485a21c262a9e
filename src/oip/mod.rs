//! The Open Inference Protocol ("KServe v2", spoken by Triton, KServe and MLServer) for the
//! `mnist` model: what its inputs and outputs are, reading an inference request (JSON, or JSON
//! followed by binary tensors as Triton's binary tensor data extension lays them out) and
//! writing the response.
//!
//! Specification: kserve/open-inference-protocol, `specification/protocol/inference_rest.md`;
//! the binary extension: triton-inference-server/server, `docs/protocol/extension_binary_data.md`.

mod request;
mod response;

pub use request::{parse, InferRequest, Input, Output};
pub use response::{encode, Encoded};

use serde::Serialize;

use crate::data::IMAGE_SIDE;
use crate::model::CLASSES;

/// Input carrying MNIST-normalised images, as the network takes them.
pub const INPUT_NORMALIZED: &str = "input";
/// Input carrying raw 8-bit pixels (light digit on dark, as MNIST).
pub const INPUT_PIXELS: &str = "pixels";
/// Input carrying encoded image files, preprocessed as `/predict` does.
pub const INPUT_IMAGES: &str = "image";
/// Output: the ten class probabilities per image.
pub const OUTPUT_PROBABILITIES: &str = "probabilities";
/// Output: the most probable digit per image.
pub const OUTPUT_PREDICTION: &str = "prediction";

/// Why an inference request cannot be served as sent; every variant is the caller's to fix.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The JSON part does not parse or lacks a required field.
    #[error("invalid inference request: {0}")]
    Json(String),
    /// `Inference-Header-Content-Length` is not a length within the body.
    #[error("Inference-Header-Content-Length must be the byte length of the JSON header, at most the body's {body} bytes; got `{got}`")]
    HeaderLength {
        /// The header's value, clipped.
        got: String,
        /// The body's length.
        body: usize,
    },
    /// Not exactly one input.
    #[error("expected exactly one input (`input` FP32, `pixels` UINT8 or `image` BYTES), got {0}")]
    InputCount(usize),
    /// An input name the model does not have.
    #[error("unknown input `{0}`: the model takes `input` (FP32 [N,1,28,28]), `pixels` (UINT8 [N,28,28]) or `image` (BYTES [N])")]
    UnknownInput(String),
    /// An output name the model does not have.
    #[error("unknown output `{0}`: the model has `probabilities` and `prediction`")]
    UnknownOutput(String),
    /// The datatype does not match the input.
    #[error("input `{input}` must be {want}, got {got}")]
    Datatype {
        /// The input's name.
        input: &'static str,
        /// Its datatype.
        want: &'static str,
        /// What was sent.
        got: String,
    },
    /// The shape does not match the input.
    #[error("input `{input}` must have shape {want} with N ≥ 1, got {got:?}")]
    Shape {
        /// The input's name.
        input: &'static str,
        /// Its shape, `N` for the batch.
        want: &'static str,
        /// What was sent.
        got: Vec<i64>,
    },
    /// More images than one request may carry.
    #[error("too many images: at most {max} per request, got {got}")]
    TooManyImages {
        /// The limit (`--max-files`).
        max: usize,
        /// The batch sent.
        got: usize,
    },
    /// The data does not hold as many elements as the shape says.
    #[error("input `{input}` has shape {shape:?} ({want} elements) but its data holds {got}")]
    ElementCount {
        /// The input's name.
        input: &'static str,
        /// Its shape.
        shape: Vec<i64>,
        /// Elements the shape calls for.
        want: usize,
        /// Elements found.
        got: usize,
    },
    /// A value that cannot be the element type (a string for FP32, 300 for UINT8, NaN).
    #[error("input `{input}`: element {index} is not a valid {datatype}")]
    Element {
        /// The input's name.
        input: &'static str,
        /// Position in row-major order.
        index: usize,
        /// The datatype.
        datatype: &'static str,
    },
    /// The binary section does not match the sizes the header declares.
    #[error("binary tensor data: {0}")]
    Binary(String),
    /// Neither `data` nor `binary_data_size` was given.
    #[error("input `{0}` has neither `data` nor a `binary_data_size` parameter")]
    NoData(&'static str),
}

/// One tensor as the model metadata describes it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: &'static str,
    /// Element type (`FP32`, `UINT8`, `BYTES`, `INT64`).
    pub datatype: &'static str,
    /// Shape; `-1` is the batch dimension.
    pub shape: Vec<i64>,
}

/// The model's inputs: exactly one of them per request.
pub fn inputs() -> Vec<TensorMetadata> {
    let side = IMAGE_SIDE as i64;
    vec![
        TensorMetadata {
            name: INPUT_NORMALIZED,
            datatype: "FP32",
            shape: vec![-1, 1, side, side],
        },
        TensorMetadata {
            name: INPUT_PIXELS,
            datatype: "UINT8",
            shape: vec![-1, side, side],
        },
        TensorMetadata {
            name: INPUT_IMAGES,
            datatype: "BYTES",
            shape: vec![-1],
        },
    ]
}

/// The model's outputs.
pub fn outputs() -> Vec<TensorMetadata> {
    vec![
        TensorMetadata {
            name: OUTPUT_PROBABILITIES,
            datatype: "FP32",
            shape: vec![-1, CLASSES as i64],
        },
        TensorMetadata {
            name: OUTPUT_PREDICTION,
            datatype: "INT64",
            shape: vec![-1],
        },
    ]
}
