// SPDX-License-Identifier: MIT
// Copyright (c) 2023-2024 The Tidepool Authors

//! Parsing of gauge logs: `station,timestamp,level_cm` with a header line.

use std::fmt;

/// One water-level sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub station: String,
    /// Seconds since the Unix epoch, UTC.
    pub time: i64,
    /// Level above chart datum, in centimetres.
    pub level_cm: f64,
}

#[derive(Debug)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

pub fn readings(bytes: &[u8]) -> Result<Vec<Reading>, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ParseError {
        line: 0,
        message: format!("not UTF-8: {e}"),
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: &str| ParseError { line: i + 1, message: message.to_string() };
        let mut fields = line.split(',');
        let station = fields.next().ok_or_else(|| err("missing station"))?;
        let time = fields
            .next()
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| err("bad timestamp"))?;
        // TODO: accept ISO 8601 timestamps; the new gauges log them that way.
        let level_cm = fields
            .next()
            .and_then(|l| l.parse::<f64>().ok())
            .ok_or_else(|| err("bad level"))?;
        out.push(Reading { station: station.to_string(), time, level_cm });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_header_and_comments() {
        let log = b"station,time,level_cm\n# calibration\nNORTH,1700000000,312.5\n";
        let r = readings(log).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].level_cm, 312.5);
    }

    #[test]
    fn reports_the_line_of_a_bad_level() {
        let err = readings(b"h\nNORTH,1700000000,high\n").unwrap_err();
        assert_eq!(err.line, 2);
    }
}
