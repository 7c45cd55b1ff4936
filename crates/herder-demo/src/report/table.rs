//! A plain-text table: a title, a header of modes, one row per measure; numbers right-aligned.

use std::fmt;

/// One scenario's table: its modes side by side. Serialized (for the live page) as its title,
/// notes, columns, and rows of a label and one cell per column.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Table {
    title: String,
    notes: Vec<String>,
    columns: Vec<String>,
    rows: Vec<(String, Vec<String>)>,
}

impl Table {
    /// A table titled `title` with one column per mode.
    pub fn new(
        title: impl Into<String>,
        columns: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Table {
            title: title.into(),
            notes: Vec::new(),
            columns: columns.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// A line under the title.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// A row: its label and one cell per column.
    pub fn row(
        mut self,
        label: impl Into<String>,
        cells: impl IntoIterator<Item = String>,
    ) -> Self {
        self.rows.push((label.into(), cells.into_iter().collect()));
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label_width = self
            .rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                let cells = self.rows.iter().filter_map(|(_, c)| c.get(i));
                cells
                    .map(|c| c.chars().count())
                    .chain([column.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        writeln!(f, "{}", self.title)?;
        for note in &self.notes {
            writeln!(f, "{note}")?;
        }
        writeln!(f)?;
        write!(f, "{:label_width$}", "")?;
        for (column, width) in self.columns.iter().zip(&widths) {
            write!(f, "   {column:>width$}")?;
        }
        writeln!(f)?;
        let total = label_width + widths.iter().map(|w| w + 3).sum::<usize>();
        writeln!(f, "{}", "-".repeat(total))?;
        for (label, cells) in &self.rows {
            write!(f, "{label:label_width$}")?;
            for (cell, width) in cells.iter().zip(&widths) {
                write!(f, "   {cell:>width$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns() {
        let table = Table::new("T", ["a", "bb"])
            .row("calls", ["1".to_owned(), "1,000".to_owned()])
            .row("p99", ["2 ms".to_owned(), "3 ms".to_owned()]);
        let text = table.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "           a      bb");
        assert_eq!(lines[4], "calls      1   1,000");
        assert_eq!(lines[5], "p99     2 ms    3 ms");
    }
}
