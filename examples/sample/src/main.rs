// SPDX-License-Identifier: MIT
// Copyright (c) 2023-2024 The Tidepool Authors

//! `tidepool LOG.csv...`: check tide-gauge logs and print one summary line per day.

mod parse;
mod summary;

use std::process::ExitCode;

extern "C" {
    fn tp_crc32(data: *const u8, len: usize) -> u32;
}

fn crc32(data: &[u8]) -> u32 {
    // SAFETY: tp_crc32 only reads `len` bytes from `data`.
    unsafe { tp_crc32(data.as_ptr(), data.len()) }
}

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: tidepool LOG.csv...");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for path in &paths {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) => {
                eprintln!("{path}: {err}");
                failed = true;
                continue;
            }
        };
        let readings = match parse::readings(&bytes) {
            Ok(readings) => readings,
            Err(err) => {
                eprintln!("{path}: {err}");
                failed = true;
                continue;
            }
        };
        println!("# {path} ({} readings, crc32 {:08x})", readings.len(), crc32(&bytes));
        for day in summary::daily(&readings) {
            println!("{day}");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
