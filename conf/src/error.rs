//! Config errors that say where they are: `FILE:LINE:COLUMN: what is wrong`.
//!
//! nginx prints `... in /etc/nginx/nginx.conf:12`; Ferry adds the column because
//! YAML nests, and a line alone often names several keys.

use std::fmt;

/// One problem in a config file, with its 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfErrors(pub Vec<ConfError>);

impl fmt::Display for ConfErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfErrors {}
