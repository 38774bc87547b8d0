/* SPDX-License-Identifier: MIT */
/* Copyright (c) 2023-2024 The Tidepool Authors */

#ifndef TIDEPOOL_CRC32_H
#define TIDEPOOL_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32 (IEEE 802.3, reflected, init and final xor 0xFFFFFFFF) of len bytes. */
uint32_t tp_crc32(const uint8_t *data, size_t len);

/* Continue a CRC over another chunk; start with crc = 0. */
uint32_t tp_crc32_update(uint32_t crc, const uint8_t *data, size_t len);

#endif /* TIDEPOOL_CRC32_H */
