//! kubectl-style tables: uppercase headers, columns left-aligned and separated by three spaces.

use std::io::Write;

/// A table of text cells; every row has as many cells as the header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

const GAP: usize = 3;

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Writes the table; `headers: false` leaves out the header row (`--no-headers`).
    pub fn write(&self, out: &mut impl Write, headers: bool) -> std::io::Result<()> {
        let lines: Vec<&Vec<String>> = if headers {
            std::iter::once(&self.header).chain(&self.rows).collect()
        } else {
            self.rows.iter().collect()
        };
        let columns = self.header.len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for line in lines {
            let mut text = String::new();
            for (c, width) in widths.iter().enumerate() {
                let cell = line.get(c).map_or("", String::as_str);
                text.push_str(cell);
                if c + 1 < columns {
                    text.push_str(&" ".repeat(width - cell.chars().count() + GAP));
                }
            }
            writeln!(out, "{}", text.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &Table, headers: bool) -> String {
        let mut out = Vec::new();
        t.write(&mut out, headers).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn columns_align_with_three_spaces() {
        let mut t = Table::new(&["NAME", "QUEUE"]);
        t.push(vec!["mail-sender".into(), "42".into()]);
        t.push(vec!["x".into(), "".into()]);
        assert_eq!(
            render(&t, true),
            "NAME          QUEUE\nmail-sender   42\nx\n"
        );
        assert_eq!(render(&t, false), "mail-sender   42\nx\n");
    }

    #[test]
    fn an_empty_table_is_just_its_header() {
        let t = Table::new(&["A", "B"]);
        assert_eq!(render(&t, true), "A   B\n");
        assert_eq!(render(&t, false), "");
    }
}
