//! Scoring a network on every corruption, through the server's own preprocessing.

use candle_core::{Device, ModuleT, Tensor, D};
use image::GrayImage;
use rayon::prelude::*;

use super::{Kind, RobustnessError};
use crate::data::{Split, IMAGE_PIXELS, IMAGE_SIDE};
use crate::model::Net;
use crate::preprocess::{self, ImageLimits};

/// Digits corrupted, prepared and classified together: bounds the memory held at once.
const CHUNK: usize = 1000;

/// How one corruption went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// The corruption.
    pub kind: Kind,
    /// Digits tried.
    pub total: usize,
    /// Digits read as their label.
    pub correct: usize,
    /// Digits the preprocessing refused (e.g. found blank), counted among the errors: the
    /// server would have answered with an error instead of a digit.
    pub refused: usize,
}

impl Row {
    /// Fraction read correctly.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }

    /// Digits not read as their label, refused ones included.
    pub fn errors(&self) -> usize {
        self.total - self.correct
    }
}

/// Every kind's row, in the order asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// One row per kind.
    pub rows: Vec<Row>,
}

impl Report {
    fn corruptions(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.kind.is_corruption())
    }

    /// Mean accuracy over the corruptions (the clean reference left out).
    pub fn mean(&self) -> Option<f64> {
        let n = self.corruptions().count();
        (n > 0).then(|| self.corruptions().map(Row::accuracy).sum::<f64>() / n as f64)
    }

    /// The worst corruption.
    pub fn worst(&self) -> Option<&Row> {
        self.corruptions()
            .min_by(|a, b| a.accuracy().total_cmp(&b.accuracy()))
    }
}

/// Corrupts every digit of `split` with each of `kinds`, runs the files through
/// [`preprocess::prepare`] and `net` (eval mode), and counts what was read right.
pub fn run(net: &Net, split: &Split, kinds: &[Kind]) -> Result<Report, RobustnessError> {
    let rows = kinds
        .iter()
        .map(|&kind| score(net, split, kind))
        .collect::<Result<_, _>>()?;
    Ok(Report { rows })
}

fn score(net: &Net, split: &Split, kind: Kind) -> Result<Row, RobustnessError> {
    let mut row = Row {
        kind,
        total: split.len(),
        correct: 0,
        refused: 0,
    };
    let side = IMAGE_SIDE as u32;
    for start in (0..split.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(split.len());
        let prepared: Vec<Option<Vec<f32>>> = (start..end)
            .into_par_iter()
            .map(|i| {
                let digit = GrayImage::from_raw(side, side, split.image(i).to_vec())
                    .unwrap_or_else(|| GrayImage::new(side, side));
                let file = kind.corrupt(&digit, i)?;
                Ok(preprocess::prepare(&file, ImageLimits::default())
                    .ok()
                    .map(|p| p.input))
            })
            .collect::<Result<_, RobustnessError>>()?;
        let (inputs, labels): (Vec<Vec<f32>>, Vec<u8>) = prepared
            .into_iter()
            .zip(&split.labels[start..end])
            .filter_map(|(input, &label)| input.map(|x| (x, label)))
            .unzip();
        row.refused += (end - start) - labels.len();
        row.correct += classify(net, inputs)
            .map_err(|source| RobustnessError::Model {
                kind: kind.name(),
                source,
            })?
            .iter()
            .zip(&labels)
            .filter(|(p, &l)| **p == u32::from(l))
            .count();
    }
    Ok(row)
}

/// The predicted class of each prepared input, in one batch.
fn classify(net: &Net, inputs: Vec<Vec<f32>>) -> candle_core::Result<Vec<u32>> {
    let n = inputs.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let data: Vec<f32> = inputs.into_iter().flatten().collect();
    debug_assert_eq!(data.len(), n * IMAGE_PIXELS);
    let xs = Tensor::from_vec(data, (n, 1, IMAGE_SIDE, IMAGE_SIDE), &Device::Cpu)?
        .to_device(net.device())?;
    net.forward_t(&xs, false)?
        .argmax(D::Minus1)?
        .to_vec1::<u32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: Kind, correct: usize) -> Row {
        Row {
            kind,
            total: 100,
            correct,
            refused: 1,
        }
    }

    #[test]
    fn mean_and_worst_leave_the_clean_reference_out() {
        let report = Report {
            rows: vec![
                row(Kind::Clean, 50),
                row(Kind::Rotate, 90),
                row(Kind::Blur, 80),
            ],
        };
        assert!((report.mean().unwrap() - 0.85).abs() < 1e-12);
        assert_eq!(report.worst().unwrap().kind, Kind::Blur);
        assert_eq!(report.rows[2].errors(), 20);
        let clean_only = Report {
            rows: vec![row(Kind::Clean, 50)],
        };
        assert_eq!(clean_only.mean(), None);
        assert!(clean_only.worst().is_none());
    }
}
