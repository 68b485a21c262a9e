//! The report as the plain-text table `train --robustness` prints.

use std::fmt;

use super::Report;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|r| r.kind.parameters().chars().count())
            .max()
            .unwrap_or(0)
            .max("parameters".len());
        writeln!(
            f,
            "{:<8}  {:<width$}  {:>8}  {:>6}  {:>7}",
            "kind", "parameters", "accuracy", "errors", "refused"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<8}  {:<width$}  {:>7.2}%  {:>6}  {:>7}",
                r.kind.name(),
                r.kind.parameters(),
                100.0 * r.accuracy(),
                r.errors(),
                r.refused
            )?;
        }
        if let (Some(mean), Some(worst)) = (self.mean(), self.worst()) {
            writeln!(
                f,
                "mean over corruptions {:.2}%, worst {} {:.2}%, on {} digits each",
                100.0 * mean,
                worst.kind.name(),
                100.0 * worst.accuracy(),
                worst.total
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, Row};
    use super::*;

    #[test]
    fn the_table_has_a_header_one_line_per_kind_and_the_summary() {
        let report = Report {
            rows: vec![
                Row {
                    kind: Kind::Clean,
                    total: 200,
                    correct: 199,
                    refused: 0,
                },
                Row {
                    kind: Kind::Thin,
                    total: 200,
                    correct: 190,
                    refused: 2,
                },
            ],
        };
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("kind") && lines[0].ends_with("refused"));
        assert!(lines[1].starts_with("clean") && lines[1].contains("99.50%"));
        assert!(
            lines[2].starts_with("thin") && lines[2].ends_with("  10        2"),
            "{}",
            lines[2]
        );
        assert_eq!(
            lines[3],
            "mean over corruptions 95.00%, worst thin 95.00%, on 200 digits each"
        );
    }
}
