// SPDX-License-Identifier: MIT
// Copyright (c) 2023-2024 The Tidepool Authors

fn main() {
    println!("cargo:rerun-if-changed=src/crc32.c");
    println!("cargo:rerun-if-changed=src/crc32.h");
    cc::Build::new().file("src/crc32.c").flag_if_supported("-std=c11").compile("crc32");
}
