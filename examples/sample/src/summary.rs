// SPDX-License-Identifier: MIT
// Copyright (c) 2023-2024 The Tidepool Authors

//! Per-day high water, low water, mean level and gaps.

use std::collections::BTreeMap;
use std::fmt;

use crate::parse::Reading;

/// Samples further apart than this count as a gap in the record.
const MAX_INTERVAL_S: i64 = 15 * 60;

pub struct Day {
    pub station: String,
    pub day: i64,
    pub high_cm: f64,
    pub low_cm: f64,
    pub mean_cm: f64,
    pub gaps: usize,
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} day {:>6}  high {:6.1}  low {:6.1}  mean {:6.1}  gaps {}",
            self.station, self.day, self.high_cm, self.low_cm, self.mean_cm, self.gaps
        )
    }
}

pub fn daily(readings: &[Reading]) -> Vec<Day> {
    let mut groups: BTreeMap<(&str, i64), Vec<&Reading>> = BTreeMap::new();
    for r in readings {
        groups.entry((r.station.as_str(), r.time.div_euclid(86_400))).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((station, day), mut rs)| {
            rs.sort_by_key(|r| r.time);
            let levels = rs.iter().map(|r| r.level_cm);
            // TODO: interpolate gaps shorter than an hour instead of only counting them.
            let gaps = rs.windows(2).filter(|w| w[1].time - w[0].time > MAX_INTERVAL_S).count();
            Day {
                station: station.to_string(),
                day,
                high_cm: levels.clone().fold(f64::MIN, f64::max),
                low_cm: levels.clone().fold(f64::MAX, f64::min),
                mean_cm: levels.sum::<f64>() / rs.len() as f64,
                gaps,
            }
        })
        .collect()
}
