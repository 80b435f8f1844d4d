//! The one table printer of the CLI: columns as wide as their widest
//! cell, two spaces apart, the last one unpadded (so a line ends with its
//! text, for `grep` and `awk` alike).

/// How a column's cells line up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    /// Numbers.
    Right,
}

pub struct Table {
    headers: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[(&'static str, Align)]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Left-aligned columns.
    pub fn left(headers: &[&'static str]) -> Self {
        Self::new(
            &headers
                .iter()
                .map(|h| (*h, Align::Left))
                .collect::<Vec<_>>(),
        )
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|(h, _)| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, cell) in cells.enumerate().take(columns) {
                let (width, align) = (widths[i], self.headers[i].1);
                if i > 0 {
                    out.push_str("  ");
                }
                let pad = width.saturating_sub(cell.chars().count());
                match align {
                    Align::Right => {
                        out.push_str(&" ".repeat(pad));
                        out.push_str(cell);
                    }
                    Align::Left if i + 1 == columns => out.push_str(cell),
                    Align::Left => {
                        out.push_str(cell);
                        out.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push('\n');
            out
        };
        let mut out = line(&mut self.headers.iter().map(|(h, _)| *h));
        for row in &self.rows {
            out.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// `-` for nothing.
pub fn or_dash(text: String) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_lines_end_with_text() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("STATE", Align::Left),
        ]);
        t.row(vec!["a-long-name".into(), "7".into(), "up".into()]);
        t.row(vec!["b".into(), "1234".into(), "down".into()]);
        assert_eq!(
            t.render(),
            "NAME            N  STATE\n\
             a-long-name     7  up\n\
             b            1234  down\n"
        );
    }
}
